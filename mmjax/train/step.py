"""One training step: embed every modality, the objective terms (shard_map islands), AdamW."""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mmjax import params as params_lib
from mmjax.data import patchmix
from mmjax.losses.objectives import Objective
from mmjax.models import Model, clamp_temperatures
from mmjax.state import TrainState, ema_params
from mmjax.train import accumulate, ema, freeze, queue, token_drop

Outputs = dict[str, dict[str, jax.Array]]


def example_keys(seed: int, step: jax.Array, batch_size: int) -> jax.Array:
    """One PRNG key per example of the global batch, from the seed, the step and the
    example's index in the batch only: the same masks and augmentations whatever the
    devices, the accumulation micro-batches, or a resume."""
    step_key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(jnp.arange(batch_size))


def make_forward(model: Model, objective: Objective) -> Callable[[Any, dict, jax.Array], Outputs]:
    """`forward(params, inputs, keys) -> {modality: outputs the objective reads}`."""
    tokens = objective.token_modalities

    def forward(params: Any, inputs: dict, keys: jax.Array) -> Outputs:
        out = model.apply({"params": params}, inputs, keys, train=True, with_tokens=tokens)
        keep = ("embedding", "tokens", "token_mask", "values")
        return {m: {k: v for k, v in o.items() if k in keep} for m, o in out.items()}

    return forward


def make_logits(model: Model) -> Callable[[Any], dict[str, tuple[jax.Array, jax.Array]]]:
    return lambda params: model.apply({"params": params}, method="logit_params")


def split_batch(
    batch: Mapping[str, jax.Array], objective: Objective, heads: tuple[str, ...] = ()
) -> tuple[dict, dict]:
    """(tower inputs: the objective's modalities and those the model's `heads` read,
    other entries the objective reads: labels)."""
    inputs = {m: batch[m] for m in dict.fromkeys((*objective.modalities, *heads))}
    return inputs, {k: batch[k] for k in objective.batch_keys}


def make_grad_fn(model: Model, objective: Objective, accum_steps: int = 1) -> Callable:
    """`grad_fn(params, batch, keys) -> ((loss, metrics), grads)`.

    With `accum_steps` > 1 the batch goes through the towers in that many micro-batches
    with the exact full-batch gradient (train/accumulate.py).
    """
    forward, logits = make_forward(model, objective), make_logits(model)
    heads = getattr(model, "head_modalities", ())
    if accum_steps > 1:
        return accumulate.make_accumulated_grad_fn(
            forward, logits, objective, accum_steps, lambda b: split_batch(b, objective, heads)
        )

    def loss_of(params, batch: dict, keys: jax.Array):
        inputs, extras = split_batch(batch, objective, heads)
        return objective(forward(params, inputs, keys), logits(params), extras)

    return jax.value_and_grad(loss_of, has_aux=True)


def applied_lr(schedule: optax.Schedule, opt_state: Any) -> jax.Array:
    """The learning rate of the update being applied: the schedule at the optimizer's own
    count, which skipped (non-finite) steps do not advance."""
    counts = [
        v
        for path, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count")
        if getattr(path[-1], "tuple_name", "") == "ScaleByScheduleState"
    ]
    return schedule(counts[0]) if counts else jnp.zeros((), jnp.float32)


def make_apply_grads(
    tx: optax.GradientTransformation, schedule: optax.Schedule, config: ml_collections.ConfigDict
) -> Callable[[TrainState, jax.Array, dict, Any], tuple[TrainState, dict]]:
    """`apply(state, loss, metrics, grads) -> (state, metrics)`: the optimizer update,
    skipped whole when the loss or gradient is not finite. Shared by the one-jit step
    and the streamed one (train/streamed.py).

    Frozen parameters (locked towers, `optim.freeze`) never reach the optimizer: it runs
    over the trainable part of the tree and they are put back untouched (train/freeze.py);
    the EMA follows every applied update (train/ema.py).
    """
    frozen = params_lib.frozen_patterns(config)

    def apply(state: TrainState, loss: jax.Array, metrics: dict, grads: Any):
        mask = params_lib.frozen_mask(state.params, frozen)
        grads = params_lib.split(grads, mask)[0]
        trainable, fixed = params_lib.split(state.params, mask)
        grad_norm = optax.tree.norm(grads)
        lr = applied_lr(schedule, state.opt_state)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        params = params_lib.merge(optax.apply_updates(trainable, updates), fixed)
        params = clamp_temperatures(params, config.objectives)
        averaged = state.ema
        if averaged is not None:
            averaged = ema.update(averaged, params_lib.split(params, mask)[0], config.ema.decay)
        # A non-finite loss or gradient drops the whole update: parameters and optimizer
        # moments stay as they were; the step and the data position still advance.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        in_a_row = jnp.where(finite, 0, state.skipped_in_a_row + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            ema=keep(averaged, state.ema),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            skipped_in_a_row=in_a_row,
        )
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            lr=jnp.where(finite, lr, 0.0),
            skipped=new_state.skipped,
            skipped_in_a_row=in_a_row,
        )
        return new_state, metrics

    return apply


def make_train_step(
    model: Model,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    config: ml_collections.ConfigDict,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """`train_step(state, batch) -> (state, metrics)`, pure; jit it with shardings.

    Frozen parameters get no gradient computation (train/freeze.py); token-dropping
    phases switch on the step (train/token_drop.py); an objective whose teacher is the
    EMA model reads its embeddings of the batch (train/ema.py); terms with a queue read
    it and push this step's rows after the update (train/queue.py).
    """
    frozen = params_lib.frozen_patterns(config)

    def make(m: Model) -> Callable:  # PatchMix on the global batch (data/patchmix.py)
        grad_fn = make_grad_fn(freeze.stop_frozen(m, frozen), objective, config.accum_steps)
        return patchmix.mixing(grad_fn, config.get("patchmix", {}))

    grad_fn = token_drop.phased_grad_fn(model, config, make)
    teachers = objective.ema_teacher_modalities
    apply = make_apply_grads(tx, schedule, config)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        keys = example_keys(config.seed, state.step, config.batch_size)
        if teachers:  # an objective's teacher is the EMA model (train/ema.py)
            if state.ema is None:
                raise ValueError("An objective has teacher='ema': set config.ema.decay.")
            ema_model = ema_params(state)
            batch = {
                **batch,
                **ema.teacher_embeddings(model, ema_model, batch, teachers, config.accum_steps),
            }
        if state.queues is not None:  # past embeddings as negatives (train/queue.py)
            batch = {**batch, **queue.batch_entries(state.queues)}
        (loss, metrics), grads = grad_fn(state.step, state.params, batch, keys)
        pushed, metrics = queue.pop_pushed(metrics)
        new_state, metrics = apply(state, loss, metrics, grads)
        if pushed:
            applied = new_state.skipped_in_a_row == 0
            new_state = new_state.replace(queues=queue.push(state.queues, pushed, applied))
        return new_state, metrics

    return train_step
