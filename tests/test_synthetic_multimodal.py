"""The multimodal synthetic source: determinism, shapes, one class across modalities, and
that every modality really carries the class (simple classifiers on hand features, fitted
on training examples, reach high accuracy on held-out ones; on pure noise they do not)."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from mmjax.data.synthetic import CLASS_NAMES, COLOURS, SHAPES, TRAIN_TEMPLATES
from mmjax.data.synthetic_multimodal import ALL_MODALITIES, MultimodalSyntheticSource

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (a scikit-learn dependency)

PALETTE = np.array(list(COLOURS.values()), float)


def assert_same_example(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "text":
            assert a[k] == b[k]
        else:
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_examples_are_pure_functions_of_seed_split_and_index():
    a, b = MultimodalSyntheticSource("train", 1000), MultimodalSyntheticSource("train", 1000)
    for i in (0, 5, 999):
        assert_same_example(a[i], b[i])
    others = (MultimodalSyntheticSource("eval", 1000), MultimodalSyntheticSource(seed=1))
    for other in others:
        x, y = a[5], other[5]
        for k in ("image", "audio", "imu", "video"):
            assert not np.array_equal(x[k], y[k]), k
    for bad in (1000, -1):
        with pytest.raises(IndexError):
            a[bad]
    with pytest.raises(ValueError, match="split"):
        MultimodalSyntheticSource("test")
    with pytest.raises(ValueError, match="smell"):
        MultimodalSyntheticSource(modalities=("image", "smell"))


def test_an_example_is_the_same_alone_in_a_batch_and_with_fewer_modalities():
    full = MultimodalSyntheticSource()
    batch = full.batch([3, 40, 7, 1000, 11])
    assert_same_example({k: v[2] for k, v in batch.items()}, full[7])
    assert full._getitems([40, 7])[1].keys() == full[7].keys()
    for modality in ALL_MODALITIES:
        alone = MultimodalSyntheticSource(modalities=(modality,))[7]
        assert set(alone) == {modality, "label", "shape_label", "colour_label"}
        assert_same_example(alone, {k: full[7][k] for k in alone})
    # More examples than a modality renders at a time (audio: in chunks of rows).
    big = full.batch(np.arange(37) * 11)
    assert_same_example({k: v[36] for k, v in big.items()}, full[396])


def test_shapes_dtypes_and_ranges_follow_the_options():
    src = MultimodalSyntheticSource(
        image_size=16,
        sample_rate=16000,
        audio_seconds=0.5,
        imu_rate=100,
        imu_seconds=1.28,
        video_frames=4,
        video_size=24,
    )
    b = src.batch(range(64))
    assert b["image"].shape == (64, 16, 16, 3) and b["image"].dtype == np.uint8
    assert b["audio"].shape == (64, 8000) and b["audio"].dtype == np.float32
    assert b["imu"].shape == (64, 128, 6) and b["imu"].dtype == np.float32
    assert b["video"].shape == (64, 4, 24, 24, 3) and b["video"].dtype == np.uint8
    assert len(b["text"]) == 64 and all(isinstance(t, str) for t in b["text"])
    for k in ("label", "shape_label", "colour_label"):
        assert b[k].shape == (64,) and b[k].dtype == np.int32
    assert np.all(np.abs(b["audio"]) <= 1) and np.isfinite(b["imu"]).all()
    assert np.abs(b["audio"]).max(1).min() > 0.05  # never silent
    default = MultimodalSyntheticSource()[0]
    assert default["audio"].shape == (8000,) and default["imu"].shape == (128, 6)
    assert default["video"].shape == (8, 32, 32, 3) and default["image"].shape == (32, 32, 3)


def test_repr_is_stable_and_names_the_options():
    a = MultimodalSyntheticSource("eval", 50, seed=3, modalities=["audio", "text"])
    assert repr(a) == repr(
        MultimodalSyntheticSource("eval", 50, seed=3, modalities=("audio", "text"))
    )
    assert "modalities=('audio', 'text')" in repr(a) and "seed=3" in repr(a)
    assert repr(a) != repr(MultimodalSyntheticSource("eval", 50, seed=3, sample_rate=16000))
    assert len(a) == 50 and a.class_names == CLASS_NAMES


def test_captions_name_the_class_and_follow_the_templates():
    src = MultimodalSyntheticSource("eval", 100, modalities=("text",))
    for i in range(0, 100, 7):
        ex = src[i]
        captions = src.captions(i, len(TRAIN_TEMPLATES))
        assert captions[0] == ex["text"] and len(set(captions)) == len(TRAIN_TEMPLATES)
        colour, shape = CLASS_NAMES[ex["label"]].split(" ")
        assert all(colour in c and shape in c for c in captions)
        assert (colour, shape) == (list(COLOURS)[ex["colour_label"]], SHAPES[ex["shape_label"]])
    with pytest.raises(ValueError):
        src.captions(0, 0)


def test_labels_cover_all_classes_evenly():
    labels = MultimodalSyntheticSource(modalities=()).batch(range(5000))["label"]
    counts = np.bincount(labels, minlength=25)
    assert counts.min() > 5000 / 25 * 0.75 and counts.max() < 5000 / 25 * 1.25


# ----------------------------------------------------------------------- physical checks


def coloured_pixels(image: np.ndarray) -> np.ndarray:
    """Mask of the pixels far from grey (the background has R = G = B up to noise)."""
    return np.ptp(image.astype(float), axis=-1) > 60


def test_image_and_video_show_the_class_colour_and_the_video_moves_in_a_line():
    src = MultimodalSyntheticSource("eval", modalities=("image", "video"), video_size=48)
    b = src.batch(range(40))
    for i in range(40):
        for frames in (b["image"][i][None], b["video"][i]):
            mask = coloured_pixels(frames)
            assert mask.reshape(len(frames), -1).sum(1).min() > 4
            mean = frames[mask].astype(float).mean(0)
            nearest = np.argmin(((PALETTE - mean) ** 2).sum(1))
            assert nearest == b["colour_label"][i]
        # Centroids of the shape frame by frame: equally spaced points on a straight line.
        mask = coloured_pixels(b["video"][i])
        ys, xs = np.indices(mask.shape[1:])
        centroids = np.stack([[(ys * m).sum() / m.sum(), (xs * m).sum() / m.sum()] for m in mask])
        f = np.arange(len(centroids))
        fit = np.polynomial.polynomial.polyfit(f, centroids, 1)
        residual = centroids - np.polynomial.polynomial.polyval(f, fit).T
        assert np.abs(residual).max() < 0.75  # pixels


def test_audio_pitch_is_the_colours_and_imu_frequency_and_gravity_are_physical():
    src = MultimodalSyntheticSource("eval", modalities=("audio", "imu"))
    b = src.batch(range(300))
    # A held circle is nearly a sine: its spectral peak is the colour's pitch (G3 B3 D#4 G4
    # B4, four semitones apart) within the 3% jitter.
    pitches = 196.0 * 2 ** (np.arange(5) * 4 / 12)
    for i in np.flatnonzero(b["shape_label"] == SHAPES.index("circle"))[:10]:
        spectrum = np.abs(np.fft.rfft(b["audio"][i] * np.hanning(8000)))
        peak = np.argmax(spectrum) * 8000 / len(b["audio"][i])  # Hz
        assert abs(peak / pitches[b["colour_label"][i]] - 1) < 0.035, (peak, b["label"][i])
    # Accelerometer: at most 15 degrees of tilt, so gravity (the mean specific force of a
    # device moving back and forth) points within ~16 degrees of +z with 9.81 m/s^2.
    for i in np.flatnonzero(b["shape_label"] == SHAPES.index("square"))[:10]:
        g = b["imu"][i, :, :3].mean(0)
        assert 9.0 < np.linalg.norm(g) < 10.6
        assert np.degrees(np.arccos(g[2] / np.linalg.norm(g))) < 16 + 3
    # Gyroscope: circling and tumbling turn at 2 pi f, f set by the colour within 5%.
    frequencies = np.array([0.8, 1.2, 1.8, 2.7, 4.0])
    for shape in ("circle", "ring"):
        for i in np.flatnonzero(b["shape_label"] == SHAPES.index(shape))[:10]:
            rate = np.linalg.norm(b["imu"][i, :, 3:].mean(0))
            assert abs(rate / (2 * np.pi * frequencies[b["colour_label"][i]]) - 1) < 0.06


# ------------------------------------------------------------------ learnability guards


def mel_filters(rate: int, n_fft: int, bands: int) -> np.ndarray:
    """[bands, n_fft // 2 + 1] triangular filters on the HTK mel scale."""
    mel, hz = (lambda f: 2595 * np.log10(1 + f / 700)), (lambda m: 700 * (10 ** (m / 2595) - 1))
    edges = hz(np.linspace(0, mel(rate / 2), bands + 2))[:, None]
    f = np.fft.rfftfreq(n_fft, 1 / rate)
    rise, fall = (
        (f - edges[:-2]) / (edges[1:-1] - edges[:-2]),
        (edges[2:] - f) / (edges[2:] - edges[1:-1]),
    )
    return np.maximum(0, np.minimum(rise, fall))


def log_mel(audio: np.ndarray, rate: int = 8000) -> np.ndarray:
    """[B, frames, 64] log-mel spectrogram: 25 ms Hann windows, 10 ms hop."""
    window, hop = int(0.025 * rate), int(0.010 * rate)
    frames = sliding_window_view(audio, window, axis=1)[:, ::hop] * np.hanning(window).astype(
        np.float32
    )
    power = np.abs(np.fft.rfft(frames, 256)) ** 2
    return np.log(power @ mel_filters(rate, 256, 64).T.astype(np.float32) + 1e-6)


def audio_features(audio: np.ndarray) -> np.ndarray:
    """Mean log-mel (pitch, timbre) and the modulation spectrum of the loudness (rhythm)."""
    spectrogram = log_mel(audio)
    loudness = spectrogram.mean(-1)
    loudness -= loudness.mean(1, keepdims=True)
    modulation = np.abs(np.fft.rfft(loudness, axis=1))[:, 1:25]
    return np.concatenate([spectrogram.mean(1), np.log(modulation + 1e-3)], 1)


def imu_features(imu: np.ndarray) -> np.ndarray:
    """Per channel: mean, spread, and the log magnitude spectrum up to ~12 Hz."""
    spectrum = np.abs(np.fft.rfft(imu - imu.mean(1, keepdims=True), axis=1))[:, 1:33]
    return np.concatenate(
        [imu.mean(1), imu.std(1), np.log(spectrum + 1e-3).reshape(len(imu), -1)], 1
    )


def shape_features(images: np.ndarray) -> np.ndarray:
    """Mean colour of the coloured pixels, and their mask in its bounding box on 6 x 6."""
    out = []
    for image in images:
        mask = coloured_pixels(image)
        ys, xs = np.nonzero(mask)
        if not len(ys):
            out.append(np.zeros(3 + 36))
            continue
        grid = [np.linspace(v.min(), v.max(), 6).round().astype(int) for v in (ys, xs)]
        colour = image[mask].astype(float).mean(0) / 255
        out.append(np.concatenate([colour, mask[np.ix_(*grid)].ravel()]))
    return np.array(out)


def video_features(video: np.ndarray) -> np.ndarray:
    """Shape features of three of the frames."""
    frames = video[:, :: max(video.shape[1] // 3, 1)][:, :3]
    return shape_features(frames.reshape(-1, *video.shape[2:])).reshape(len(video), -1)


FEATURES = {
    "audio": (audio_features, 0.95),
    "imu": (imu_features, 0.95),
    "video": (video_features, 0.95),
    "image": (shape_features, 0.85),  # small shapes at 32 px: triangle and cross are close
}


@pytest.fixture(scope="module")
def data():
    modalities = tuple(FEATURES)
    train = MultimodalSyntheticSource("train", modalities=modalities).batch(range(500))
    held_out = MultimodalSyntheticSource("eval", modalities=modalities).batch(range(250))
    return train, held_out


def held_out_accuracy(x_train, y_train, x_test, y_test) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return float((model.fit(x_train, y_train).predict(x_test) == y_test).mean())


def noise_like(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if x.dtype == np.uint8:
        return rng.integers(0, 256, x.shape).astype(np.uint8)
    return rng.normal(0, x.std(), x.shape).astype(x.dtype)


@pytest.fixture
def one_blas_thread():
    with threadpool_limits(1):  # BLAS threads crawl on a busy machine (30 s instead of 1)
        yield


@pytest.mark.parametrize("modality", list(FEATURES))
def test_each_modality_carries_the_class(data, modality, one_blas_thread):
    features, floor = FEATURES[modality]
    train, held_out = data
    x, x_test = features(train[modality]), features(held_out[modality])
    accuracy = held_out_accuracy(x, train["label"], x_test, held_out["label"])
    assert accuracy >= floor, f"{modality}: held-out accuracy {accuracy:.3f} over 25 classes"
    shape_accuracy = held_out_accuracy(x, train["shape_label"], x_test, held_out["shape_label"])
    assert shape_accuracy >= floor
    # The same features of noise carry nothing: chance is 1/25.
    rng = np.random.default_rng(0)
    noise = [features(noise_like(d[modality], rng)) for d in (train, held_out)]
    chance = held_out_accuracy(noise[0], train["label"], noise[1], held_out["label"])
    assert chance < 0.12, f"{modality}: {chance:.3f} on noise"


def test_a_sample_rate_too_low_for_the_pitches_fails():
    with pytest.raises(ValueError, match="sample_rate"):
        MultimodalSyntheticSource(modalities=("audio",), sample_rate=1000)
