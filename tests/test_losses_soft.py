"""`soft_targets`, `soft_targets_masked` against float64 NumPy references from the papers.

Logits L = s X Y^T; row i's target t_i = (1 - alpha) e_i + alpha w_i / sum_j w_ij with
w from the teacher: cross-modal softmax exp(<xt_i, yt_j> / T); CWCL (Srinivasa et al.
2023) (1 + <ut_i, ut_j>) / 2; MaskCon (Feng & Patras 2023) 1 on the diagonal and
exp((<ut_i, ut_j> - max over the other same-label k) / T) on the other same-label columns;
masked by coarse labels. loss = mean over rows of -sum_j t_ij log softmax_j, both ways.
dloss/dL = (softmax(L) - T_x2y) / 2B + ((softmax(L^T) - T_y2x) / 2B)^T.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mmjax.losses import LOSSES, get_loss, sharded_loss
from mmjax.parallel.mesh import BATCH_AXES
from tests.test_losses import _grads, _logsumexp, _mesh, assert_matches, make_batch, np_clip

# ---------------------------------------------------------------- NumPy reference (float64)


def _np_targets(sim, allowed, target, alpha, temperature):
    n = sim.shape[0]
    eye = np.eye(n, dtype=bool)
    if target == "cross":
        w = np.where(allowed, np.exp(sim / temperature), 0.0)
    elif target == "intra":
        w = np.where(allowed, (1 + sim) / 2, 0.0)
    else:  # maskcon: MaskCon's soft labels, rescaled by the largest, the sample itself 1
        others = allowed & ~eye
        w = np.zeros_like(sim)
        for i in range(n):
            if others[i].any():
                w[i, others[i]] = np.exp(
                    (sim[i, others[i]] - sim[i, others[i]].max()) / temperature
                )
        w[eye] = 1.0
    total = w.sum(1, keepdims=True)
    q = np.where(total > 0, w / np.where(total > 0, total, 1), eye)
    return (1 - alpha) * eye + alpha * q


def np_soft(x, y, s, xt, yt, xl=None, yl=None, *, target, alpha, temperature, intra="x"):
    """Loss, metrics and analytic gradients (x, y, scale, bias) of the soft-target loss."""
    x, y, xt, yt = (a.astype(np.float64) for a in (x, y, xt, yt))
    n = len(x)
    logits = s * x @ y.T
    u = xt if intra == "x" else yt
    sim_x2y, sim_y2x = (xt @ yt.T, yt @ xt.T) if target == "cross" else (u @ u.T, u @ u.T)
    ones = np.ones((n, n), bool)
    allowed_x2y = ones if xl is None else xl[:, None] == yl[None, :]
    allowed_y2x = ones if xl is None else yl[:, None] == xl[None, :]
    t_x2y = _np_targets(sim_x2y, allowed_x2y, target, alpha, temperature)
    t_y2x = _np_targets(sim_y2x, allowed_y2x, target, alpha, temperature)

    def direction(lg, t):
        logp = lg - _logsumexp(lg, 1)[:, None]
        return -(t * logp).sum(1).mean(), (np.exp(logp) - t) / (2 * n)

    loss_x2y, g_x2y = direction(logits, t_x2y)
    loss_y2x, g_y2x = direction(logits.T, t_y2x)
    metrics = {
        "loss_x2y": loss_x2y,
        "loss_y2x": loss_y2x,
        "acc_x2y": (logits.argmax(1) == np.arange(n)).mean(),
        "acc_y2x": (logits.argmax(0) == np.arange(n)).mean(),
    }
    loss = (loss_x2y + loss_y2x) / 2
    return loss, metrics, _grads(g_x2y + g_y2x.T, x, y, s, 0.0)


# ---------------------------------------------------------------- running the losses


@functools.cache
def _compiled(name: str, n_dev: int, options: tuple = ()):
    mesh = _mesh(n_dev)
    fn = sharded_loss(get_loss(name, dict(options)), mesh)
    vg = jax.value_and_grad(
        lambda x, y, s, b, inputs: fn(x, y, s, b, **inputs),
        argnums=(0, 1, 2, 3, 4),
        has_aux=True,
        allow_int=True,
    )
    return jax.jit(vg), NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def run_soft(name, x, y, s, inputs: dict, n_dev: int = 8, **options):
    """(loss, metrics, grads of x, y, scale, bias) and the inputs' gradients, as NumPy."""
    fn, batch = _compiled(name, n_dev, tuple(sorted(options.items())))
    put = functools.partial(jax.device_put, device=batch)
    args = (
        put(x),
        put(y),
        jnp.float32(s),
        jnp.float32(0.0),
        {k: put(v) for k, v in inputs.items()},
    )
    (loss, metrics), grads = fn(*args)
    got = float(loss), {k: float(v) for k, v in metrics.items()}, [np.asarray(g) for g in grads[:4]]
    return got, grads[4]


def _normalise(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def make_soft_batch(case: str, n: int = 64, seed: int = 0):
    """Embeddings, scale and a teacher that is a noisy copy of them (an EMA model, say)."""
    x, y, s, _ = make_batch(case, n=n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    xt = _normalise(x + 0.3 * rng.normal(size=x.shape) / np.sqrt(x.shape[1]))
    yt = _normalise(y + 0.3 * rng.normal(size=y.shape) / np.sqrt(y.shape[1]))
    return x, y, s, xt, yt


LABELS = {
    "distinct": lambda n, rng: np.arange(n),  # no positive besides the diagonal
    "one_class": lambda n, rng: np.zeros(n, int),
    "four_classes": lambda n, rng: rng.integers(0, 4, size=n),
}


def assert_no_input_gradient(grads: dict) -> None:
    """The teacher gets an exact zero gradient; the integer labels a float0 one."""
    for k, g in grads.items():
        if k.endswith("_labels"):
            assert g.dtype == jax.dtypes.float0, k
        else:
            assert not np.any(np.asarray(g)), k


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("target", ["cross", "intra", "maskcon"])
def test_soft_targets_match_numpy_reference(target: str) -> None:
    options = {"target": target, "alpha": 0.7, "target_temperature": 0.2}
    for case in ("typical", "hot"):
        x, y, s, xt, yt = make_soft_batch(case)
        got, input_grads = run_soft(
            "soft_targets", x, y, s, {"x_teacher": xt, "y_teacher": yt}, **options
        )
        want = np_soft(x, y, s, xt, yt, target=target, alpha=0.7, temperature=0.2)
        assert_matches(f"{target} {case}", got, want)
        np.testing.assert_allclose(got[1]["loss_x2y"], want[1]["loss_x2y"], rtol=1e-5)
        assert_no_input_gradient(input_grads)


@pytest.mark.parametrize("target", ["cross", "intra", "maskcon"])
@pytest.mark.parametrize("labels", sorted(LABELS))
def test_masked_soft_targets_match_numpy_reference(target: str, labels: str) -> None:
    x, y, s, xt, yt = make_soft_batch("hot")  # scale 100
    rng = np.random.default_rng(2)
    xl = LABELS[labels](len(x), rng)
    # A pair's two labels normally agree; "four_classes" also draws y's apart, so that a
    # mix-up of the two directions' masks shows.
    yl = rng.integers(0, 4, size=len(x)) if labels == "four_classes" else xl
    inputs = {"x_teacher": xt, "y_teacher": yt, "x_labels": xl, "y_labels": yl}
    got, input_grads = run_soft("soft_targets_masked", x, y, s, inputs, target=target, alpha=0.8)
    want = np_soft(x, y, s, xt, yt, xl, yl, target=target, alpha=0.8, temperature=0.1)
    assert_matches(f"{target} {labels}", got, want)
    assert_no_input_gradient(input_grads)


def test_cwcl_weights_from_either_modality() -> None:
    """CWCL proper: alpha 1, weights from the frozen modality's teacher (here y's)."""
    x, y, s, xt, yt = make_soft_batch("typical")
    options = {"target": "intra", "alpha": 1.0, "intra_modality": "y"}
    got, _ = run_soft("soft_targets", x, y, s, {"x_teacher": xt, "y_teacher": yt}, **options)
    assert_matches(
        "cwcl", got, np_soft(x, y, s, xt, yt, target="intra", alpha=1.0, temperature=1.0, intra="y")
    )


def test_current_embeddings_as_their_own_teacher_get_no_teacher_gradient() -> None:
    """The common use: the teacher is this step's embeddings, stop-gradiented."""
    x, y, s, _, _ = make_soft_batch("hot")
    got, input_grads = run_soft("soft_targets", x, y, s, {"x_teacher": x, "y_teacher": y})
    assert_matches(
        "self-teacher", got, np_soft(x, y, s, x, y, target="cross", alpha=0.5, temperature=0.1)
    )
    assert_no_input_gradient(input_grads)


def test_distinct_labels_give_infonce_exactly_even_when_tiny() -> None:
    """No same-label neighbour: the target is one-hot and the loss is CLIP's, to rtol at
    a 1e-16 loss (the positive is kept apart from the logsumexp of the negatives)."""
    x, y, s, _ = make_batch("extreme")
    lab = np.arange(len(x))
    inputs = {"x_teacher": x, "y_teacher": y, "x_labels": lab, "y_labels": lab}
    for target in ("cross", "maskcon"):
        got, _ = run_soft("soft_targets_masked", x, y, s, inputs, target=target, alpha=0.8)
        assert_matches(target, got, np_clip(x, y, s, 0.0), tiny_atol=0.0)


@pytest.mark.parametrize("n_dev", [1, 2, 4, 8])
def test_same_on_any_number_of_devices(n_dev: int) -> None:
    x, y, s, xt, yt = make_soft_batch("hot", n=48)
    lab = LABELS["four_classes"](len(x), np.random.default_rng(3))
    inputs = {"x_teacher": xt, "y_teacher": yt, "x_labels": lab, "y_labels": lab}
    got, input_grads = run_soft("soft_targets_masked", x, y, s, inputs, n_dev=n_dev, alpha=0.8)
    assert_matches(
        f"{n_dev} devices",
        got,
        np_soft(x, y, s, xt, yt, lab, lab, target="maskcon", alpha=0.8, temperature=0.1),
    )
    assert_no_input_gradient(input_grads)


@pytest.mark.parametrize(
    "bad", [{"target": "knn"}, {"alpha": 1.5}, {"target_temperature": 0.0}, {"intra_modality": "z"}]
)
def test_bad_options_are_refused_by_name(bad: dict) -> None:
    x = jnp.zeros((4, 8))
    with pytest.raises(ValueError, match=next(iter(bad))):
        LOSSES.get("soft_targets")(
            x, x, 1.0, 0.0, axis_name="data", x_teacher=x, y_teacher=x, **bad
        )


def test_declared_inputs_and_options() -> None:
    plain, masked = get_loss("soft_targets"), get_loss("soft_targets_masked", {"alpha": 0.3})
    assert plain.inputs == ("x_teacher", "y_teacher")
    assert masked.inputs == ("x_teacher", "y_teacher", "x_labels", "y_labels")
    assert masked.fn.keywords == {"alpha": 0.3}
    assert set(plain.options) == {"target", "alpha", "target_temperature", "intra_modality"}
