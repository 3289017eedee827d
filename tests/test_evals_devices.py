"""Every evaluator gives the same numbers on 8 devices as on 1, for 1001 examples.

1001 is divisible by none of the batch sizes (8, 64), so the last batch of every pass
is padded and masked. With the same examples per device (8 devices x 8 = global 64
against 1 device x 8) every kernel sees the same shapes, and the numbers must match
exactly: this is the test that sharding, padding, masking and gathering count every
example once. With the same global batch (64 on both), the per-device
batch differs (8 against 64), XLA picks other matmul blockings, and features differ by
about 1e-6: zero-shot, retrieval and kNN agree to a few examples (near-ties of a
random model flip: we saw kNN top-1 16.48% against 16.38%, and 15.38% against 15.08%
with the suite's unoptimised CPU code, tests/conftest.py). The linear probe
amplifies it: a random model's features are nearly rank-deficient, and L-BFGS fits that
stop at `max_iter` turn 1e-6 into other weights and picks of l2 (we saw 18.0% against
20.8% top-1). Given the same features the probe is exact on any mesh (it runs
replicated), which the first test checks.
"""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax import evals
from mmjax import state as state_lib
from mmjax.parallel import sharding
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config

EVALUATORS = ("zeroshot", "retrieval", "knn", "linear_probe")


def config_with_all(batch: int, names=EVALUATORS) -> ml_collections.ConfigDict:
    config = tiny_config()
    with config.unlocked():
        config.data.synthetic.num_eval = 1001
        config.evals = ml_collections.ConfigDict()
        for name in names:
            entry = dict(type=name, batch_size=batch)
            if name == "linear_probe":
                entry["max_iter"] = 100  # the sweep's 15 fits stay short on CPU
            if name == "retrieval":
                entry["captions_per_image"] = 3
            config.evals[name] = entry
    return config


def random_params(abstract_params, mesh, seed: int = 0):
    """Host-drawn parameters, replicated: the same on every mesh, and no init compile.

    (Compiling the model's init takes about 10 s on the 8 fake CPU devices.)
    """
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree.flatten(abstract_params)
    draw = [rng.normal(0, 0.1, a.shape).astype(a.dtype) + (a.ndim == 1) for a in leaves]
    return jax.device_put(jax.tree.unflatten(tree, draw), NamedSharding(mesh, PartitionSpec()))


def run_all(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, float]:
    mesh = make_mesh(config.mesh, jax.devices()[:num_devices])
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state_lib.build(config, mesh)
        model, abstract = built.model, built.abstract
        params = random_params(abstract.params, mesh)
        results = {}
        for e in evals.build_evaluators(evals.EvalContext(model, mesh, config)):
            results.update(evals.prefixed(e.name, e.evaluator.run(params)))
    return results


@pytest.fixture(scope="module")
def on_eight() -> dict[str, float]:
    return run_all(config_with_all(64), 8)


def test_same_examples_per_device_give_identical_numbers(on_eight):
    on_one = run_all(config_with_all(8), 1)
    assert on_one == on_eight
    assert len(on_eight) == 3 + 6 + 2 + 2


def test_same_global_batch_gives_the_same_numbers(on_eight):
    names = ("zeroshot", "retrieval", "knn")
    on_one = run_all(config_with_all(64, names), 1)
    assert on_one.keys() == {k for k in on_eight if k.split("/")[0] in names}
    for k, v in on_one.items():
        assert abs(v - on_eight[k]) <= 4 / 1001, k
