"""Counter-based random numbers: pure functions of key and stream, with the right moments."""

import numpy as np

from mmjax.data.counter_rng import Draws, example_keys


def test_a_row_depends_on_its_key_and_stream_only():
    keys = example_keys(0, 1, np.arange(100))
    assert len(set(keys.tolist())) == 100
    assert not np.array_equal(keys, example_keys(1, 1, np.arange(100)))
    assert not np.array_equal(keys, example_keys(0, 0, np.arange(100)))
    batch, alone = Draws(keys), Draws(keys[[17]])
    np.testing.assert_array_equal(batch.uniform("a", (3,))[17], alone.uniform("a", (3,))[0])
    np.testing.assert_array_equal(batch.noise("n", (5, 2))[17], alone.noise("n", (5, 2))[0])
    # Streams are independent of each other and of the shape drawn.
    assert not np.array_equal(batch.uniform("a", (3,)), batch.uniform("b", (3,)))
    np.testing.assert_array_equal(batch.uniform("a", (3,)), batch.uniform("a", (5,))[:, :3])


def test_moments_and_ranges():
    d = Draws(example_keys(3, 0, np.arange(2000)))
    u = d.uniform("u", (100,))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.std() - 12**-0.5) < 0.003
    # Neighbouring counters and neighbouring keys are uncorrelated.
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01
    counts = np.bincount(d.integers("i", 25, (50,)).ravel(), minlength=25)
    assert counts.min() > 4000 * 0.9 and counts.max() < 4000 * 1.1
    for z in (d.normal("z", (100,)), d.noise("bank", (100,))):
        assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
        assert abs((z**4).mean() - 3) < 0.1  # Gaussian kurtosis
    assert d.noise("bank", (7,)).dtype == np.float32
