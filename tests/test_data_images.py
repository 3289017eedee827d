"""Decoding, random resized crops and centre crops, against Pillow references."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from mmjax.data import images


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth test picture (JPEG-friendly, and resampling differences stay small)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    rgb = [np.sin(6 * x + 4 * y + p) for p in phase]
    return ((np.stack(rgb, -1) + 1) * 127.5).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(out, fmt, quality=95)
    return out.getvalue()


def _pil_reference(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("decoder", ["pil", "simplejpeg"])
def test_decoders_match_pillow(decoder):
    if decoder == "simplejpeg":
        pytest.importorskip("simplejpeg")
    picture = _smooth(48, 64)
    for data in (_encode(picture), _encode(picture, "PNG"), _encode(picture, "JPEG", "L")):
        got = images.DECODERS.get(decoder)(data)
        want = _pil_reference(data)
        assert got.shape == want.shape == (48, 64, 3) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want).max() <= 2


@pytest.mark.parametrize("decoder", ["pil", "simplejpeg"])
def test_corrupt_and_truncated_images_raise(decoder):
    if decoder == "simplejpeg":
        pytest.importorskip("simplejpeg")
    data = _encode(_smooth(64, 64))
    for bad in (data[: len(data) // 2], b"not an image", data[:2] + b"\0" * 300):
        with pytest.raises(Exception):  # noqa: B017 -- any error; the pipeline counts it
            images.DECODERS.get(decoder)(bad)


def test_random_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for hw in ((256, 256), (300, 200), (120, 400)):
        for _ in range(200):
            top, left, h, w = images.random_box(hw, (0.3, 0.7), (3 / 4, 4 / 3), rng)
            assert top >= 0 and top + h <= 1 + 1e-9 and left >= 0 and left + w <= 1 + 1e-9
            area = h * w
            aspect = (w * hw[1]) / (h * hw[0])
            assert 0.3 - 0.02 <= area <= 0.7 + 0.02
            assert 3 / 4 - 0.03 <= aspect <= 4 / 3 + 0.03


def test_random_box_falls_back_to_a_clamped_centre():
    # A 10:1 panorama: no box of aspect <= 4/3 and area >= 0.9 fits, so the fallback is
    # the centred full-height box of aspect 4/3.
    top, left, h, w = images.random_box(
        (100, 1000), (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0)
    )
    assert (top, h) == (0, 1)
    assert math.isclose(w * 1000, round(100 * 4 / 3)) and math.isclose(
        left, (1000 - 133) // 2 / 1000
    )


def test_full_crop_equals_a_plain_resize():
    picture = _smooth(80, 80)
    t = images.ImageTransform(32, True, (1.0, 1.0), (1.0, 1.0), "pil", "pil")
    got = t(_encode(picture, "PNG"), np.random.default_rng(0))
    want = np.asarray(Image.fromarray(picture).resize((32, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(got, want)


def _torchvision_style_eval(array: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to `size` (bicubic), then crop the centre (CLIP eval)."""
    image = Image.fromarray(array)
    w, h = image.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return np.asarray(image.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("hw", [(96, 160), (200, 120), (64, 64)])
def test_eval_transform_is_resize_and_centre_crop(hw):
    picture = _smooth(*hw, seed=hw[0])
    t = images.ImageTransform(48, train=False, decoder="pil", resizer="pil")
    got = t(_encode(picture, "PNG"), np.random.default_rng(0))
    want = _torchvision_style_eval(picture, 48)
    assert got.shape == (48, 48, 3)
    assert np.abs(got.astype(int) - want).mean() < 2.0  # sub-pixel rounding only


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode():
    picture = _smooth(1024, 768)
    data = _encode(picture)
    fast = images.ImageTransform(64, train=False)  # auto: DCT-scaled decode
    got = fast(data, np.random.default_rng(0))
    want = _torchvision_style_eval(_pil_reference(data), 64)
    assert np.abs(got.astype(int) - want).mean() < 3.0


def test_cv2_resizer_close_to_pillow():
    pytest.importorskip("cv2")
    picture = _smooth(256, 256)
    box = (10, 20, 230, 220)
    pil = images.RESIZERS.get("pil")(picture, box, 224)
    cv2 = images.RESIZERS.get("cv2")(picture, box, 224)
    assert np.abs(pil.astype(int) - cv2).mean() < 1.5
    small = images.RESIZERS.get("cv2")(picture, (0, 0, 256, 256), 32)  # area filter
    ref = images.RESIZERS.get("pil")(picture, (0, 0, 256, 256), 32)
    assert np.abs(small.astype(int) - ref).mean() < 3.0


def test_arrays_at_size_pass_through_and_others_are_cropped():
    t = images.ImageTransform(16, train=True)
    ready = _smooth(16, 16)
    assert t(ready, np.random.default_rng(0)) is ready
    grey = _smooth(40, 30)[..., 0]
    out = t(grey, np.random.default_rng(0))
    assert out.shape == (16, 16, 3) and (out[..., 0] == out[..., 1]).all()


def test_auto_picks_an_installed_backend():
    t = images.ImageTransform(8)
    assert t.decoder in images.DECODERS.names() and t.resizer in images.RESIZERS.names()
    with pytest.raises(ValueError, match="image decoder"):
        images.ImageTransform(8, decoder="nope")
