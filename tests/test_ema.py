"""EMA of the parameters: equal to a float64 numpy EMA of the parameter trajectory, frozen
parameters left out, and evaluation of the raw weights, the EMA, or both."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import evals, state
from mmjax.evals import standalone
from mmjax.evals.registry import Scheduled
from mmjax.parallel.mesh import make_mesh
from mmjax.train import loop
from tests.helpers import tiny_config
from tests.train_helpers import train_run, train_states

DECAY = 0.9


def test_ema_equals_numpy_ema_of_the_trajectory():
    config = tiny_config(**{"ema.decay": DECAY, "optim.freeze": (r"^objectives/",)})
    states = train_states(config, 4)
    ema = jax.tree.map(lambda x: np.asarray(x, np.float64), states[0].params)
    for s in states[1:]:
        ema = jax.tree.map(
            lambda e, p: DECAY * e + (1 - DECAY) * np.asarray(p, np.float64), ema, s.params
        )
    last = states[-1]
    got = state.ema_params(last)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ema)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
    # The frozen temperature is not averaged (no copy of it in the EMA) and never moved.
    assert len(jax.tree.leaves(last.ema)) == len(jax.tree.leaves(last.params)) - 1
    t = lambda p: float(p["objectives"]["image_text"]["t"])
    assert t(got) == t(states[0].params)
    # The EMA lags the parameters: it is not a copy of them.
    kernel = lambda p: p["image"]["proj"]["kernel"]
    assert np.abs(kernel(got) - kernel(last.params)).max() > 1e-4


class Sum:
    """An evaluator that reports the sum of the image projection it is given."""

    def run(self, params):
        return {"sum": float(np.sum(params["image"]["proj"]["kernel"]))}


def test_weights_select_raw_ema_or_both():
    raw = {"image": {"proj": {"kernel": np.ones(3)}}}
    ema = {"image": {"proj": {"kernel": np.full(3, 2.0)}}}
    assert Scheduled("e", 1, Sum(), "raw").run(raw, ema) == {"e/sum": 3.0}
    assert Scheduled("e", 1, Sum(), "ema").run(raw, ema) == {"e/ema/sum": 6.0}
    assert Scheduled("e", 1, Sum(), "both").run(raw, ema) == {"e/sum": 3.0, "e/ema/sum": 6.0}


def test_ema_weights_without_an_ema_fail_at_start():
    config = tiny_config(**{"evals.zeroshot.weights": "both"})
    with pytest.raises(ValueError, match="needs an EMA"):
        evals.build_evaluators(evals.EvalContext(None, None, config))


def test_train_and_standalone_evaluate_both(tmp_path):
    config = tiny_config(
        total_steps=2,
        **{"ema.decay": 0.5, "evals.zeroshot.every": 2, "evals.zeroshot.weights": "both"},
    )
    last = loop.train(config, str(tmp_path))
    assert {"zeroshot/top1", "zeroshot/ema/top1"} <= set(last)
    again = standalone.evaluate(config, str(tmp_path))
    for k in ("zeroshot/top1", "zeroshot/ema/top1", "zeroshot/mean_per_class_recall"):
        assert again[k] == pytest.approx(last[k]), k


def test_ema_teacher_is_the_ema_model():
    """soft_targets with the EMA model as teacher: at step 0 the EMA is the model, so the
    loss equals the self-teacher's; later the EMA lags and the losses part."""
    losses = {}
    for teacher in ("self", "ema"):
        config = tiny_config(
            **{
                "ema.decay": 0.9,
                "objectives.image_text.loss": "soft_targets",
                "objectives.image_text.teacher": teacher,
                "accum_steps": 2,
            }
        )
        _, metrics = train_run(config, 3)
        losses[teacher] = [float(m["loss"]) for m in metrics]
    np.testing.assert_allclose(losses["ema"][0], losses["self"][0], rtol=1e-5)
    assert abs(losses["ema"][2] - losses["self"][2]) > 1e-5, losses


def test_ema_is_float32_beside_bfloat16_parameters():
    """A bfloat16 average would not move at decay 0.9999: the EMA is kept in float32 and
    cast to the parameters' dtype only to evaluate (or teach) with it."""
    config = tiny_config(**{"ema.decay": 0.9999, "model.param_dtype": "bfloat16"})
    abstract = state.build(config, make_mesh(config.mesh)).abstract
    assert {x.dtype for x in jax.tree.leaves(abstract.ema)} == {np.dtype(np.float32)}
    assert np.dtype(jnp.bfloat16) in {x.dtype for x in jax.tree.leaves(abstract.params)}
    ema = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract.ema)
    params = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), abstract.params)
    model = state.ema_model(ema, params)
    for a, p in zip(jax.tree.leaves(model), jax.tree.leaves(params)):
        assert a.dtype == p.dtype and not np.any(np.asarray(a, np.float32))
