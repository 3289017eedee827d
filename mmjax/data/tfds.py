"""A TFDS dataset through `tfds.data_source`: random access, no TensorFlow needed.

`config.data.path` names the dataset ("name" or "name:version"), `tfds_split` the split
and `tfds_data_dir` where it was prepared (in the array_record file format).
The modalities' `key`s name the features ("image", "captions/text"). Image features are
read undecoded (`SkipDecoding`), so decoding and cropping are the pipeline's, with the
same bad-data handling as every other source.
"""

import ml_collections

from mmjax.data.modalities import keys_of
from mmjax.data.skipped import Skipped


class TfdsSource:
    """Random-access source of raw examples from a prepared TFDS dataset."""

    def __init__(self, name: str, split: str, data_dir: str, undecoded: tuple[str, ...] = ()):
        """`undecoded`: features to read as encoded bytes (image features only)."""
        import tensorflow_datasets as tfds

        self.name, self.split = name, split
        builder = tfds.builder(name, data_dir=data_dir or None)
        features = builder.info.features
        decoders = {
            k: tfds.decode.SkipDecoding()
            for k in undecoded
            if k in features and isinstance(features[k], tfds.features.Image)
        }
        self._source = tfds.data_source(
            name, split=split, data_dir=data_dir or None, decoders=decoders or None
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict | Skipped:
        try:
            example = self._source[index]
        except Exception as e:  # a damaged record is skipped, not fatal
            return Skipped("bad_record", f"{self.name}[{index}]", f"{type(e).__name__}: {e}")
        return {**example, "__key__": f"{self.name}[{index}]"}

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r})"


def build(config: ml_collections.ConfigDict) -> TfdsSource:
    """From the data config: image modalities' keys are read undecoded."""
    images = [keys_of(m.key) for m in config.modalities.values() if m.type == "image"]
    return TfdsSource(
        config.path, config.tfds_split, config.tfds_data_dir, tuple(k for ks in images for k in ks)
    )
