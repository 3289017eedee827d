"""TFDS through `tfds.data_source`: a small dataset prepared here (array_record format,
no TensorFlow), read with the configured feature names, skipping bad examples, resumable."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.data_shards import assert_same_batches, iterator, json_roundtrip
from tests.helpers import tiny_config

tfds = pytest.importorskip("tensorflow_datasets")
N = 40


def _jpeg(i: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((20, 24, 3), 5 * i, np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _caption(i: int) -> str:
    return "" if i % 10 == 3 else f"picture number {i}"  # every tenth caption empty


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    class MmjaxTiny(tfds.core.GeneratorBasedBuilder):
        """Encoded images as bytes tensors: preparing `Image` features needs TensorFlow."""

        VERSION = tfds.core.Version("1.0.0")
        code_path = None  # tfds would look up this test package's files (importlib_resources)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "picture": tfds.features.Tensor(shape=(), dtype=np.object_),
                        "meta": {"caption": tfds.features.Text()},
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(N):
                yield i, {"picture": _jpeg(i), "meta": {"caption": _caption(i)}}

    out = tmp_path_factory.mktemp("tfds")
    MmjaxTiny(data_dir=str(out), file_format="array_record").download_and_prepare()
    return out


def _config(data_dir, **overrides):
    return tiny_config(
        **{
            "data.source": "tfds",
            "data.path": "mmjax_tiny",
            "data.tfds_data_dir": str(data_dir),
            "data.modalities.image.key": "picture",
            "data.modalities.text.key": "meta/caption",
            "data.modalities.text.tokenizer": "bytes",
            "model.towers.text.vocab_size": 259,
            "model.towers.text.context_length": 24,
            **overrides,
        }
    )


def test_tfds_examples_come_through_with_named_fields(data_dir):
    crop = {"data.modalities.image.crop_scale": (1.0, 1.0)}
    config = _config(data_dir, **crop, **{"data.modalities.image.crop_ratio": (1.0, 1.0)})
    it = iterator(config)
    batch = next(it)
    assert batch["image"].shape == (16, 16, 16, 3) and batch["image"].dtype == np.uint8
    # Bytes tokenizer: the ids spell the caption; its number names the picture's grey level.
    for image, tokens in zip(batch["image"], batch["text"]):
        caption = bytes(int(t) - 1 for t in tokens[1:] if 0 < t < 257).decode()
        i = int(caption.rsplit(" ", 1)[1])
        assert caption == _caption(i) and abs(float(image.mean()) - 5 * i) < 4
    it.close()


def test_tfds_skips_empty_captions_and_resumes_exactly(data_dir):
    config = _config(data_dir)
    it = iterator(config)
    states, batches = [], []
    for _ in range(6):  # 36 good examples an epoch: crosses epochs
        states.append(json_roundtrip(it.get_state()))
        batches.append(next(it))
    assert it.skipped["empty_text"] >= N // 10
    for k in (2, 4):
        fresh = iterator(config)
        fresh.set_state(states[k])
        assert_same_batches([next(fresh) for _ in range(6 - k)], batches[k:])
        assert fresh.skipped == it.skipped
        fresh.close()
    it.close()
