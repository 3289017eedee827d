"""A directory of images, one sub-directory per class, as a labelled evaluation dataset.

The layout of torchvision's `ImageFolder` (used by CLIP_benchmark for custom datasets):
`root/<split>/<class>/<image>`, or `root/<class>/<image>` when no split is given.
Classes are the sub-directories in sorted order (label = position); class names are the
directory names with underscores read as spaces, so `golden_retriever` prompts as
"a photo of a golden retriever.".
"""

import os

import ml_collections
import numpy as np

from mmjax.data.images import ImageTransform
from mmjax.data.sources import synthetic_image_size
from mmjax.evals.datasets import EVAL_DATASETS

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder:
    """Labelled images from `root/<class>/...`, resized and centre-cropped to `image_size`."""

    templates = "photo"

    def __init__(self, root: str, image_size: int):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Image folder {root!r} does not exist.")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(classes):
            for folder, _, names in sorted(os.walk(os.path.join(root, name))):
                for f in sorted(names):
                    if f.lower().endswith(EXTENSIONS):
                        self.files.append((os.path.join(folder, f), label))
        if not self.files:
            raise FileNotFoundError(f"No images in class sub-directories of {root!r}.")
        self.class_names = tuple(c.replace("_", " ") for c in classes)
        self.transform = ImageTransform(image_size, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path, label = self.files[index]
        with open(path, "rb") as f:
            return {"image": self.transform(f.read(), None), "label": np.int32(label)}


@EVAL_DATASETS.register("imagefolder")
def image_folder(
    entry: ml_collections.ConfigDict, config: ml_collections.ConfigDict, split: str
) -> ImageFolder:
    """`entry.path` is the root; `split` (if any) a sub-directory of it, e.g. "val"."""
    if not entry.path:
        raise ValueError("Dataset 'imagefolder' needs `path`: the root directory.")
    return ImageFolder(os.path.join(entry.path, split), synthetic_image_size(config.data))
