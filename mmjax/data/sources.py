"""`config.data.source` -> a source of raw records (dicts of fields).

Random-access sources (synthetic, arrayrecord, tfds) have `__len__` and `__getitem__`;
streaming sources (wds) have `stream(...)` -> `grain.IterDataset`. pipeline.py turns
either into batches. Real sources serve the training data; evaluation datasets have
their own registry (evals/datasets.py).
"""

import logging
from collections.abc import Callable

import ml_collections

from mmjax.data.modalities import keys_of
from mmjax.data.synthetic import SyntheticSource
from mmjax.data.synthetic_multimodal import ALL_MODALITIES, MultimodalSyntheticSource
from mmjax.registry import Registry

SOURCES = Registry("data source")
SYNTHETIC_IMU_CHANNELS = 6  # accelerometer and gyroscope, 3 axes each (synthetic_imu.py)


@SOURCES.register("synthetic")
def synthetic(
    config: ml_collections.ConfigDict, split: str, seed: int
) -> SyntheticSource | MultimodalSyntheticSource:
    """The image source, or the multimodal one when a modality's `key` names a field only it
    makes (audio, imu, video): then it makes just the fields the keys name, at the sizes
    of the modalities that read them, so that they arrive at their final shapes."""
    c = config.synthetic
    size = c.num_train if split == "train" else c.num_eval
    fields = synthetic_fields(config)
    if set(fields) <= {"image", "text"}:  # image-text configs: the image source, as ever
        return SyntheticSource(split, size, synthetic_image_size(config), seed, c.captions)
    return MultimodalSyntheticSource(split, size, seed, fields, **synthetic_shapes(config))


def synthetic_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The multimodal source's fields (image, text, audio, imu, video) the modalities name."""
    named = {k for m in config.modalities.values() for k in keys_of(m.key)}
    return tuple(f for f in ALL_MODALITIES if f in named)


def synthetic_image_size(config: ml_collections.ConfigDict) -> int:
    """The synthetic images' size: that of the data config's image modality (else 32)."""
    sizes = [m.size for m in config.modalities.values() if m.type == "image"]
    return sizes[0] if sizes else 32


def _reading(config: ml_collections.ConfigDict, field: str, kind: str):
    """The first modality of type `kind` whose keys name `field`, or None."""
    for m in config.modalities.values():
        if m.type == kind and field in keys_of(m.key):
            return m
    return None


def synthetic_shapes(config: ml_collections.ConfigDict) -> dict:
    """MultimodalSyntheticSource's sizes from the modalities that read its fields: audio at
    the sample rate for one clip, an IMU window of `length` at 50 Hz, a video of the
    frames one clip spans at its size."""
    out = dict(image_size=synthetic_image_size(config))
    if m := _reading(config, "audio", "audio"):
        out.update(sample_rate=int(m.sample_rate), audio_seconds=float(m.clip_seconds))
    if m := _reading(config, "imu", "timeseries"):
        if m.channels != SYNTHETIC_IMU_CHANNELS:
            raise ValueError(
                f"The synthetic IMU has {SYNTHETIC_IMU_CHANNELS} channels; the timeseries"
                f" modality reading it wants {m.channels} (set its channels to 6)."
            )
        rate = MultimodalSyntheticSource.imu_rate
        out.update(imu_rate=rate, imu_seconds=m.length / rate)
    if m := _reading(config, "video", "video"):
        out.update(video_frames=(m.frames - 1) * m.stride + 1, video_size=int(m.size))
    return out


def _train_only(split: str, name: str) -> None:
    if split != "train":
        raise ValueError(f"Source {name!r} serves the training split only, not {split!r}.")


@SOURCES.register("wds")
def webdataset(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import wds

    _train_only(split, "wds")
    return wds.build(config)


@SOURCES.register("arrayrecord")
def arrayrecord(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import arrayrecord

    _train_only(split, "arrayrecord")
    return arrayrecord.build(config)


@SOURCES.register("tfds")
def tfds(config: ml_collections.ConfigDict, split: str, seed: int):
    from mmjax.data import tfds

    _train_only(split, "tfds")
    return tfds.build(config)


# Source name -> check(data config, process count or None) -> problems with its files,
# as messages: run before anything is built (mmjax/validate/).
SOURCE_CHECKS: dict[str, Callable[[ml_collections.ConfigDict, int | None], list[str]]] = {}


def _check_wds(config: ml_collections.ConfigDict, num_processes: int | None) -> list[str]:
    from mmjax.data import wds

    return wds.check(config, num_processes)


def _check_arrayrecord(config: ml_collections.ConfigDict, num_processes: int | None) -> list[str]:
    from mmjax.data import arrayrecord

    return arrayrecord.check(config, num_processes)


SOURCE_CHECKS.update(wds=_check_wds, arrayrecord=_check_arrayrecord)


def check_source(config: ml_collections.ConfigDict, num_processes: int | None = None) -> list[str]:
    """Problems with the files of the source `config` (the data config) names; [] for the
    synthetic source, or when the path is empty (the synthetic fallback below)."""
    if config.source == "synthetic" or not config.path or config.source not in SOURCE_CHECKS:
        return []
    return SOURCE_CHECKS[config.source](config, num_processes)


def source_name(config: ml_collections.ConfigDict) -> str:
    """The source to use: the configured one, or synthetic when no data path is set."""
    if config.source != "synthetic" and not config.path:
        logging.warning(
            "config.data.path is empty, so training uses the built-in SYNTHETIC source, not"
            " %r. Set --config.data.path=... to train on real data.",
            config.source,
        )
        return "synthetic"
    return config.source


def build_source(config: ml_collections.ConfigDict, split: str, seed: int):
    """The source for `split` ("train" or "eval") named by `config` (the data config)."""
    return SOURCES.get(source_name(config))(config, split, seed)
