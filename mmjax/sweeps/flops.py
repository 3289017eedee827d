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
"""

import functools
import json
import math

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
def _abstract_forward(config_json: str) -> tuple[core.ClosedJaxpr, int]:
    """(forward jaxpr of one example through every tower, parameter count); shapes only."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    model = models.build_model(config.model, config.objectives)
    inputs = {
        name: jax.ShapeDtypeStruct((1, *shape), dtype)
        for name, (shape, dtype) in modalities.example_specs(config).items()
    }
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs)
    count = sum(math.prod(v.shape) for v in jax.tree.leaves(variables))
    return jax.make_jaxpr(model.apply)(variables, inputs), count


def _forward(config: ml_collections.ConfigDict) -> core.ClosedJaxpr:
    return _abstract_forward(config.to_json())[0]


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
