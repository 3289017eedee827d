"""COCO and Flickr30k retrieval from Karpathy-split JSON (dataset_coco.json, ...).

The file of Karpathy & Fei-Fei (2015) lists images with their split ("train",
"restval", "val", "test") and sentences; retrieval papers (CLIP, ALIGN, SigLIP) and
CLIP_benchmark report the 5k-image COCO and 1k-image Flickr30k *test* splits with all
their captions (about five per image, the "raw" text). An image's path is
`image_dir/<filepath>/<filename>` (COCO: filepath "val2014"; Flickr30k has none).
"""

import json
import os

import ml_collections
import numpy as np

from mmjax.data.images import ImageTransform
from mmjax.data.sources import synthetic_image_size
from mmjax.evals.datasets import EVAL_DATASETS


class KarpathySplit:
    """Captioned images of one split: {"image": uint8 [size, size, 3]} and `captions`."""

    def __init__(self, json_path: str, image_dir: str, split: str, image_size: int):
        with open(json_path) as f:
            images = [im for im in json.load(f)["images"] if im["split"] == split]
        if not images:
            raise ValueError(f"No images with split {split!r} in {json_path}.")
        self.paths = [
            os.path.join(image_dir, im.get("filepath", ""), im["filename"]) for im in images
        ]
        self.captions = [[s["raw"].strip() for s in im["sentences"]] for im in images]
        self.transform = ImageTransform(image_size, train=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        with open(self.paths[index], "rb") as f:
            return {"image": self.transform(f.read(), None)}


@EVAL_DATASETS.register("karpathy")
def karpathy(
    entry: ml_collections.ConfigDict, config: ml_collections.ConfigDict, split: str
) -> KarpathySplit:
    """`entry.path`: the JSON file; `entry.image_dir`: the image root; split "test"."""
    if not entry.path or not entry.image_dir:
        raise ValueError(
            f"Dataset {entry.dataset!r} needs `path` (the Karpathy JSON, e.g."
            " dataset_coco.json) and `image_dir` (the directory of the images)."
        )
    return KarpathySplit(
        entry.path, entry.image_dir, split or "test", synthetic_image_size(config.data)
    )


EVAL_DATASETS.register("coco")(karpathy)
EVAL_DATASETS.register("flickr30k")(karpathy)
