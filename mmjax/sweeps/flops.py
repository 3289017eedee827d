"""Training compute of a CLIP run, in FLOPs, counted from the model's jaxpr.

6 x params x tokens is a language-model rule; a two-tower model has no single token
count, so we count the forward pass itself: every matmul (`dot_general`, 2 x M x N x K)
and convolution (2 x outputs x kernel window x input channels) in the jaxpr of both
towers on one example, with the body of a `scan` counted once per iteration. This is
the usual model-FLOPs convention (matmuls only; elementwise work is a few percent).

Why not XLA's `compiled.cost_analysis()`: it counts a while loop's body once, and the
towers scan their layers, so it reports the same FLOPs for depth 1, 2 or 24. It is exact
for a depth-1 model, which `tests/test_sweep.py` uses as the reference.

Training costs about 3 x forward (the backward pass is about twice the forward; Kaplan
et al. 2020, sec. 2.1), and the loss adds the logits row of each example over the global
batch (2 x batch x embed_dim), so

    compute = 3 x (forward_flops_per_sample + 2 x batch x embed_dim) x samples_seen.

Per train step (`step_flops`, what MFU divides by) the same count is split into model
FLOPs (that formula for one global batch, each objective term's logits counted) and the
recomputation that activation checkpointing and GradCache's first pass add on top:
hardware FLOPs = model + recompute, reported apart, never folded into MFU.
"""

import dataclasses
import functools
import json
import math
from typing import Any

import jax
import ml_collections
from jax.extend import core

from mmjax import models
from mmjax.data import modalities

BACKWARD_FACTOR = 3


def _eqn_flops(eqn: core.JaxprEqn) -> float:
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        contracted = math.prod(lhs[d] for d in lhs_contract)
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted
    if eqn.primitive.name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape  # kernel: out features x in features x window
        dims = eqn.params["dimension_numbers"].rhs_spec
        out_features = rhs[dims[0]]
        per_output = math.prod(rhs) / out_features
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
    return 0.0


def jaxpr_flops(jaxpr: core.Jaxpr) -> float:
    """Matmul and convolution FLOPs of a jaxpr; scan bodies times their length.

    Every branch of a `cond` is counted and a `while` body once: neither occurs in the
    towers' forward pass.
    """
    total = 0.0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for sub in core.jaxprs_in_params(eqn.params):
            total += repeat * jaxpr_flops(sub)
    return total


@functools.cache
def _abstract_model(config_json: str) -> tuple[Any, dict, Any]:
    """(model, one example's input structs, variable structs) of a config; shapes only.
    Attention is traced as XLA's einsums, whatever the config picks: a fused kernel is
    one opaque call whose FLOPs the jaxpr cannot see."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    if "attention" in config.model:
        config.model.attention = "xla"
    model = models.build_model(config.model, config.objectives)
    inputs = {
        name: jax.ShapeDtypeStruct((1, *shape), dtype)
        for name, (shape, dtype) in modalities.example_specs(config).items()
    }
    return model, inputs, jax.eval_shape(model.init, jax.random.key(0), inputs)


@functools.cache
def _abstract_forward(config_json: str, only: str | None = None) -> tuple[core.ClosedJaxpr, int]:
    """(forward jaxpr of one example through every tower, or only modality `only`'s,
    parameter count)."""
    model, inputs, variables = _abstract_model(config_json)
    count = sum(math.prod(v.shape) for v in jax.tree.leaves(variables))
    if only is not None:
        inputs = {only: inputs[only]}
    return jax.make_jaxpr(model.apply)(variables, inputs), count


def _forward(config: ml_collections.ConfigDict, only: str | None = None) -> core.ClosedJaxpr:
    return _abstract_forward(config.to_json(), only)[0]


def param_count(config: ml_collections.ConfigDict) -> int:
    """Parameters of the model, every tower and term."""
    return _abstract_forward(config.to_json())[1]


def forward_flops_per_sample(config: ml_collections.ConfigDict) -> float:
    """Matmul FLOPs of one example through every tower."""
    return jaxpr_flops(_forward(config).jaxpr)


def training_flops(config: ml_collections.ConfigDict, samples_seen: int) -> float:
    """Total training compute: 3 x (towers + logits row) forward FLOPs x samples seen."""
    logits = 2 * config.batch_size * config.model.embed_dim
    return BACKWARD_FACTOR * (forward_flops_per_sample(config) + logits) * samples_seen


def tower_flops_per_sample(config: ml_collections.ConfigDict) -> dict[str, float]:
    """{modality: matmul FLOPs of one example through its tower}, for the modalities the
    model has a tower for (shared towers count once per modality that uses them)."""
    towers = config.model.towers
    return {m: jaxpr_flops(_forward(config, m).jaxpr) for m in towers if m in _inputs(config)}


def _inputs(config: ml_collections.ConfigDict) -> set[str]:
    return set(modalities.example_specs(config))


# FLOPs recomputed in the backward pass, as a fraction of the tower's forward, per remat
# policy: "full" reruns every block; "dots" keeps matmul outputs (only elementwise work,
# which model FLOPs do not count, is redone); saving by name keeps what is named, so the
# full forward is its upper bound.
REMAT_RECOMPUTE = {"none": 0.0, "full": 1.0, "dots": 0.0}


def remat_fraction(policy: str) -> float:
    return 1.0 if policy.startswith("names:") else REMAT_RECOMPUTE[policy]


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """FLOPs of one train step over the global batch."""

    model: float  # 3 x (towers + logits) forward: what MFU counts
    recompute: float  # forward work done again (remat, GradCache's first pass)

    @property
    def hardware(self) -> float:
        return self.model + self.recompute


def step_flops(config: ml_collections.ConfigDict, streamed: bool = False) -> StepFlops:
    """Model and recomputed FLOPs of one train step of `config`.

    Model: `BACKWARD_FACTOR` x (every tower's forward + every objective term's logits
    matrix, 2 x batch x embed_dim per example) x batch. Recomputed: each tower's forward
    again times its remat policy's fraction (the blocks are nearly all of a tower's
    FLOPs, so the whole tower is the count), plus one forward of every tower when the
    step accumulates (GradCache embeds every micro-batch once without keeping
    activations, then again under `vjp`).
    """
    batch = config.batch_size
    towers = tower_flops_per_sample(config)
    logits = 2 * batch * config.model.embed_dim * len(config.objectives)
    model = BACKWARD_FACTOR * (sum(towers.values()) + logits) * batch
    recompute = 0.0
    for m, f in towers.items():
        c = config.model.towers[m]
        owner = config.model.towers[c.share] if c.share else c
        recompute += remat_fraction(owner.remat or config.model.remat) * f * batch
    if config.accum_steps > 1 or streamed:
        recompute += sum(towers.values()) * batch
    return StepFlops(model, recompute)
