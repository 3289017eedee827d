"""Audio, time-series and video readers against independent references (soundfile's and
numpy's own reads, Pillow's own resize, an FFT peak), their crops and skip reasons, and
the synthetic source they read in the pipeline."""

import io
import tarfile
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax import config as config_lib
from mmjax.data import modalities, sources
from mmjax.data.examples import Prepare
from mmjax.data.skipped import Skipped
from mmjax.data.synthetic import SyntheticSource
from mmjax.data.synthetic_multimodal import MultimodalSyntheticSource
from tests.helpers import tiny_config

soundfile = pytest.importorskip("soundfile")


def reader(type_: str, train: bool = False, **fields):
    """The reader of one modality `type_` named "m", with `fields` set."""
    c = config_lib.modality(type_, **fields)
    return modalities.MODALITY_TYPES.get(type_).build("m", c, None, train)


def rngs(n: int):
    return [np.random.default_rng(i) for i in range(n)]


def encoded(wave: np.ndarray, rate: int, fmt: str, subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    soundfile.write(out, wave, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def reason(result) -> str | None:
    return result.reason if isinstance(result, Skipped) else None


# ---------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_audio_decodes_as_soundfile_reads_it_mixed_to_the_channel_mean(fmt, channels):
    wave = np.random.default_rng(channels).uniform(-0.9, 0.9, (4000, channels))
    data = encoded(wave.squeeze(), 8000, fmt)
    want, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    assert rate == 8000 and want.shape == (4000, channels)
    got = reader("audio", sample_rate=8000, clip_seconds=0.5)(data, np.random.default_rng(0))
    assert got.dtype == np.float32 and got.shape == (4000,)
    np.testing.assert_allclose(got, want.mean(axis=1), rtol=0, atol=1e-7)


def test_audio_training_crops_lie_inside_and_evaluation_takes_the_centre():
    ramp = np.arange(1000, dtype=np.float32)  # each sample says where it was
    train = reader("audio", True, sample_rate=100, clip_seconds=3.0)
    starts = set()
    for rng in rngs(40):
        out = train(ramp, rng)
        assert out.shape == (300,)
        start = int(out[0])
        assert 0 <= start <= 700
        np.testing.assert_array_equal(out, ramp[start : start + 300])
        starts.add(start)
    assert len(starts) > 30  # random, not one place
    out = reader("audio", sample_rate=100, clip_seconds=3.0)(ramp, np.random.default_rng(0))
    np.testing.assert_array_equal(out, ramp[350:650])


def test_short_audio_is_zero_padded_or_skipped():
    wave = np.linspace(-0.5, 0.5, 250, dtype=np.float32)
    padded = reader("audio", True, sample_rate=100, clip_seconds=4.0)(
        wave, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(padded[:250], wave)
    np.testing.assert_array_equal(padded[250:], 0)
    strict = reader("audio", sample_rate=100, clip_seconds=4.0, pad_short=False)
    assert reason(strict(wave, np.random.default_rng(0))) == "short_m"


@pytest.mark.parametrize("rate", [44100, 22050, 8000])  # down, down, up
def test_resampling_keeps_a_tone_at_its_frequency(rate):
    t = np.arange(2 * rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    data = encoded(tone, rate, "WAV", "FLOAT")
    out = reader("audio", sample_rate=16000, clip_seconds=1.0)(data, np.random.default_rng(0))
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64) * np.hanning(16000)))
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    assert freqs[spectrum.argmax()] == 1000.0  # 1 Hz bins
    assert abs(np.sqrt(2 * np.mean(out.astype(np.float64) ** 2)) - 0.5) < 0.01  # amplitude
    fixed = reader("audio", sample_rate=16000, clip_seconds=1.0, resample=False)
    assert reason(fixed(data, np.random.default_rng(0))) == (
        "bad_rate_m" if rate != 16000 else None
    )


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_truncated_empty_and_garbage_audio_is_bad_and_no_bytes_missing(fmt):
    data = encoded(np.sin(np.arange(8000) / 7) * 0.5, 8000, fmt)
    read = reader("audio", sample_rate=8000, clip_seconds=0.25)
    rng = np.random.default_rng(0)
    assert reason(read(data, rng)) is None
    for cut in (len(data) // 2, len(data) - 2, 60):
        # A cut WAV decodes without error as a shorter clip: the header says otherwise.
        assert reason(read(data[:cut], rng)) == "bad_m", cut
    assert reason(read(np.random.default_rng(1).bytes(3000), rng)) == "bad_m"
    assert reason(read(encoded(np.zeros(0), 8000, "WAV"), rng)) == "bad_m"  # no samples
    assert reason(read(b"", rng)) == "missing_m"


def test_non_finite_audio_is_bad():
    wave = np.zeros(800, np.float32)
    wave[5] = np.nan
    read = reader("audio", sample_rate=8000, clip_seconds=0.05)
    assert reason(read(encoded(wave, 8000, "WAV", "FLOAT"), np.random.default_rng(0))) == "bad_m"


# ------------------------------------------------------------------------------ time series


def test_timeseries_from_npy_equals_numpy_read_and_crops_inside():
    x = np.arange(200 * 3, dtype=np.float64).reshape(200, 3)  # row i starts with 3 i
    data = npy(x)
    full = reader("timeseries", channels=3, length=200)(data, np.random.default_rng(0))
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full, np.load(io.BytesIO(data)).astype(np.float32))
    train = reader("timeseries", True, channels=3, length=50)
    starts = set()
    for rng in rngs(30):
        out = train(data, rng)
        start = int(out[0, 0]) // 3
        assert out.shape == (50, 3) and 0 <= start <= 150
        np.testing.assert_array_equal(out, x[start : start + 50])
        starts.add(start)
    assert len(starts) > 20
    centre = reader("timeseries", channels=3, length=50)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(centre, x[75:125])


def test_timeseries_skip_reasons():
    rng = np.random.default_rng(0)
    read = reader("timeseries", channels=6, length=100, pad_short=False)
    assert reason(read(npy(np.zeros((100, 6), np.int16)), rng)) is None  # ints convert
    assert reason(read(npy(np.zeros((100, 5))), rng)) == "bad_shape_m"
    assert reason(read(npy(np.zeros(600)), rng)) == "bad_shape_m"
    assert reason(read(npy(np.zeros((99, 6))), rng)) == "short_m"
    assert reason(read(b"\x93NUMPY garbage", rng)) == "bad_m"
    objects = io.BytesIO()
    np.save(objects, np.array([[None] * 6] * 100, dtype=object), allow_pickle=True)
    assert reason(read(objects.getvalue(), rng)) == "bad_m"  # pickles are refused
    nan = np.zeros((100, 6))
    nan[3, 2] = np.inf
    assert reason(read(nan, rng)) == "bad_m"
    assert reason(read(b"", rng)) == "missing_m"
    short = np.ones((60, 6), np.float32)
    padded = reader("timeseries", channels=6, length=100)(short, rng)
    np.testing.assert_array_equal(padded[:60], 1)
    np.testing.assert_array_equal(padded[60:], 0)


# ----------------------------------------------------------------------------------- video


def numbered_video(frames: int, size: int = 16) -> np.ndarray:
    """uint8 [F, S, S, 3]: frame i has value i everywhere but a fixed picture in its corner."""
    video = np.repeat(np.arange(frames, dtype=np.uint8), size * size * 3)
    video = video.reshape(frames, size, size, 3).copy()
    video[:, :4, :4] = np.random.default_rng(0).integers(0, 256, (4, 4, 3), np.uint8)
    return video


def test_video_frames_with_stride_random_in_training_centred_at_evaluation():
    video = numbered_video(30)
    train = reader("video", True, frames=4, stride=3, size=16)
    starts = set()
    for rng in rngs(30):
        out = train(npy(video), rng)
        assert out.shape == (4, 16, 16, 3) and out.dtype == np.uint8
        start = int(out[0, 8, 8, 0])
        assert 0 <= start <= 30 - 10
        np.testing.assert_array_equal(out, video[start + 3 * np.arange(4)])  # as it is
        starts.add(start)
    assert len(starts) > 10
    out = reader("video", frames=4, stride=3, size=16)(video, np.random.default_rng(0))
    np.testing.assert_array_equal(out, video[[10, 13, 16, 19]])  # (30 - 10) // 2 = 10


def pil_centre_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Pillow's own resize of the centred square of the shorter side (bicubic)."""
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    box = (left, top, left + s, top + s)
    return np.asarray(
        Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC, box=box)
    )


def test_video_frames_are_resized_as_pillow_resizes_each():
    video = np.random.default_rng(1).integers(0, 256, (6, 24, 40, 3), np.uint8)
    out = reader("video", frames=3, stride=2, size=12, resizer="pil")(
        video, np.random.default_rng(0)
    )
    assert out.shape == (3, 12, 12, 3)
    for got, frame in zip(out, video[[0, 2, 4]]):
        np.testing.assert_array_equal(got, pil_centre_resize(frame, 12))


def test_training_takes_one_crop_box_for_all_frames():
    still = np.repeat(np.random.default_rng(2).integers(0, 256, (1, 32, 48, 3), np.uint8), 8, 0)
    train = reader("video", True, frames=4, stride=2, size=16, crop_scale=(0.3, 0.6))
    outputs = [train(still, rng) for rng in rngs(6)]
    for out in outputs:
        for frame in out[1:]:
            np.testing.assert_array_equal(frame, out[0])
    assert len({o[0].tobytes() for o in outputs}) > 1  # the box itself is random


def test_video_resized_by_opencv_equals_its_resize_of_each_frame():
    cv2 = pytest.importorskip("cv2")
    video = np.random.default_rng(1).integers(0, 256, (5, 30, 20, 3), np.uint8)
    out = reader("video", frames=5, stride=1, size=8, resizer="cv2")(
        video, np.random.default_rng(0)
    )
    for got, frame in zip(out, video):
        want = cv2.resize(frame[5:25], (8, 8), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(got, want)


def frames_tar(frames: np.ndarray, names: list[str]) -> bytes:
    """A tar of PNG frames (lossless, so decoding gives the frames back)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for frame, name in zip(frames, names):
            png = io.BytesIO()
            Image.fromarray(frame).save(png, "PNG")
            info = tarfile.TarInfo(name)
            info.size = len(png.getvalue())
            t.addfile(info, io.BytesIO(png.getvalue()))
    return out.getvalue()


def test_video_from_a_tar_of_encoded_frames_in_natural_name_order():
    video = numbered_video(12)
    names = [f"frame{i}.png" for i in range(12)]  # frame10 sorts after frame9
    order = np.random.default_rng(0).permutation(12)  # written in any order
    data = frames_tar(video[order], [names[i] for i in order])
    out = reader("video", frames=4, stride=3, size=16)(data, np.random.default_rng(0))
    np.testing.assert_array_equal(out, video[[1, 4, 7, 10]])  # (12 - 10) // 2 = 1


def test_video_skip_reasons_and_padding():
    rng = np.random.default_rng(0)
    read = reader("video", frames=4, stride=2, size=16)
    assert reason(read(npy(numbered_video(7)), rng)) is None  # span 7
    assert reason(read(npy(numbered_video(6)), rng)) == "short_m"
    assert reason(read(npy(np.zeros((7, 16, 16), np.uint8)), rng)) == "bad_shape_m"
    assert reason(read(npy(np.zeros((7, 16, 16, 4), np.uint8)), rng)) == "bad_shape_m"
    assert reason(read(npy(np.zeros((7, 16, 16, 3), np.float32)), rng)) == "bad_m"
    assert reason(read(b"not a video at all", rng)) == "bad_m"
    assert reason(read(b"", rng)) == "missing_m"
    names = [f"{i}.png" for i in range(8)]
    small, large = numbered_video(8)[:, :8], numbered_video(8)
    assert reason(read(frames_tar(small, names), rng)) is None  # resized to 16 x 16
    mixed = [small[0]] * 4 + [large[0]] * 4  # frames of two sizes in one clip
    assert reason(read(frames_tar(mixed, names), rng)) == "bad_m"
    padded = reader("video", frames=4, stride=2, size=16, pad_short=True)(numbered_video(4), rng)
    np.testing.assert_array_equal(padded[:2], numbered_video(4)[[0, 2]])
    np.testing.assert_array_equal(padded[2:], 0)


def test_readers_draw_only_from_the_generator_they_are_given():
    video, wave = numbered_video(40), np.arange(5000, dtype=np.float32)
    for read, value in (
        (reader("video", True, frames=4, stride=2, size=8), video),
        (reader("audio", True, sample_rate=100, clip_seconds=2.0), wave),
        (reader("timeseries", True, channels=1, length=30), wave[:, None]),
    ):
        a, b = read(value, np.random.default_rng(7)), read(value, np.random.default_rng(7))
        np.testing.assert_array_equal(a, b)
        assert a.shape == read.shape and a.dtype == read.dtype


def test_skip_reasons_list_every_reason_of_the_new_types():
    config = multimodal_config()
    reasons = modalities.skip_reasons(config)
    for want in ("bad_rate_audio", "short_audio", "bad_shape_imu", "short_imu", "short_video"):
        assert want in reasons


# ------------------------------------------------------------------------ synthetic source


def multimodal_config(**data_modalities):
    """The tiny config with image, text, audio (8 kHz, 0.5 s), IMU (64 x 6) and video."""
    config = tiny_config()
    with config.unlocked():
        m = config.data.modalities
        m.audio = config_lib.modality("audio", sample_rate=8000, clip_seconds=0.5)
        m.imu = config_lib.modality("timeseries", length=64)
        m.video = config_lib.modality("video", frames=3, stride=2, size=16)
        m.label = config_lib.modality("label")
        for name, entry in data_modalities.items():
            m[name] = entry
    return config


def test_synthetic_source_makes_what_the_modalities_read_at_their_shapes():
    config = multimodal_config()
    source = sources.build_source(config.data, "train", 3)
    assert source == MultimodalSyntheticSource(
        "train",
        config.data.synthetic.num_train,
        3,
        ("image", "text", "audio", "imu", "video"),
        image_size=16,
        sample_rate=8000,
        audio_seconds=0.5,
        imu_rate=50,
        imu_seconds=64 / 50,
        video_frames=5,
        video_size=16,
    )
    example = source[11]
    assert example["audio"].shape == (4000,) and example["imu"].shape == (64, 6)
    assert example["video"].shape == (5, 16, 16, 3)
    only_audio = ml_collections.ConfigDict(config.data.to_dict())
    del only_audio.modalities["imu"], only_audio.modalities["video"]
    assert sources.build_source(only_audio, "eval", 3).modalities == ("image", "text", "audio")


def test_image_text_configs_keep_the_image_source_bit_for_bit():
    config = tiny_config()
    source = sources.build_source(config.data, "train", 5)
    assert source == SyntheticSource("train", config.data.synthetic.num_train, 16, 5)
    with_labels = multimodal_config()
    with with_labels.unlocked():
        for name in ("audio", "imu", "video"):
            del with_labels.data.modalities[name]
    assert isinstance(sources.build_source(with_labels.data, "train", 5), SyntheticSource)


def test_synthetic_imu_needs_six_channels():
    config = multimodal_config(imu=config_lib.modality("timeseries", channels=3))
    with pytest.raises(ValueError, match="6 channels"):
        sources.build_source(config.data, "train", 0)


def test_prepare_gives_each_reader_the_generator_of_its_example_and_name():
    """The generators made on first use draw what eager ones would (examples.py)."""
    readers = {
        "image": (("image",), reader("image", True, size=8)),
        "video": (("video",), reader("video", True, frames=2, stride=3, size=8)),
        "label": (("label",), reader("label")),
    }
    record = {
        "image": np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8),
        "video": np.random.default_rng(1).integers(0, 256, (9, 12, 10, 3), np.uint8),
        "label": 3,
    }
    out = Prepare(readers)(record, np.random.default_rng(7))
    base = int(np.random.default_rng(7).integers(2**62))
    for name, (_, read) in readers.items():
        own = np.random.default_rng([base, zlib.crc32(name.encode())])
        np.testing.assert_array_equal(out[name], read(record[name], own), err_msg=name)
