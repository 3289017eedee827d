"""TFDS datasets as labelled evaluation datasets, read with random access.

`tfds.data_source` reads prepared ArrayRecord files (`tfds build` or a shared data_dir;
ImageNet needs its manual download). Every process opens its own reader and reads only
its share of each batch. Known datasets come with CLIP's conventions: the split the
papers report, the curated ImageNet class names, the per-dataset templates. Any other
TFDS dataset is "tfds:NAME", its class names from its label feature (underscores read as
spaces: CIFAR-100's "aquarium_fish" is CLIP's "aquarium fish").
"""

from collections.abc import Sequence

import ml_collections
import numpy as np

from mmjax.data.images import ImageTransform
from mmjax.data.sources import synthetic_image_size
from mmjax.evals.classnames import class_list
from mmjax.evals.datasets import EVAL_DATASETS

# name -> (evaluation split, shipped class-name list or "", templates)
KNOWN = {
    "imagenet2012": ("validation", "imagenet", "imagenet"),
    "imagenet_v2": ("test", "imagenet", "imagenet"),
    "cifar10": ("test", "", "cifar10"),
    "cifar100": ("test", "", "cifar100"),
}


class TfdsSource:
    """{"image": uint8 [size, size, 3], "label": int32} from a TFDS data source."""

    def __init__(
        self,
        name: str,
        split: str,
        image_size: int,
        data_dir: str = "",
        image_key: str = "image",
        label_key: str = "label",
        class_names: Sequence[str] = (),
        templates: str = "photo",
    ):
        import tensorflow_datasets as tfds  # imported here: slow, and only needed here

        self.name, self.split = name, split
        self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        self.image_key, self.label_key = image_key, label_key
        self.transform = ImageTransform(image_size, train=False)
        if not class_names:
            names = self.source.dataset_info.features[label_key].names
            class_names = [n.replace("_", " ") for n in names]
        self.class_names = tuple(class_names)
        self.templates = templates

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        example = self.source[index]
        image = np.asarray(example[self.image_key])
        if image.ndim == 3 and image.shape[-1] == 1:  # grey, as MNIST stores it
            image = image[..., 0]
        return {"image": self.transform(image, None), "label": np.int32(example[self.label_key])}


def _factory(name: str | None):
    def build(
        entry: ml_collections.ConfigDict, config: ml_collections.ConfigDict, split: str
    ) -> TfdsSource:
        tfds_name = name or entry.dataset.partition(":")[2]
        if not tfds_name:
            raise ValueError("Name the TFDS dataset: dataset='tfds:NAME'.")
        default_split, names, templates = KNOWN.get(tfds_name, ("test", "", "photo"))
        names = entry.class_names or names
        return TfdsSource(
            tfds_name,
            split or default_split,
            synthetic_image_size(config.data),
            entry.data_dir,
            entry.image_key,
            entry.label_key,
            class_list(names) if names else (),
            templates,
        )

    build.__doc__ = f"TFDS {name or 'tfds:NAME'}; `split` defaults to the papers' one."
    return build


for _name in KNOWN:
    EVAL_DATASETS.register(_name)(_factory(_name))
EVAL_DATASETS.register("tfds")(_factory(None))
