"""`config.objectives`: weighted loss terms, each over a pair of named modalities.

    c.objectives.image_text = dict(loss="softmax_ring", modalities=("image", "text"),
                                   weight=1.0, temperature_init=2.659, tile_size=1024)

A term's loss comes from the loss registry; its scale (and bias) are the model's learned
logit parameters of that term; its extra inputs (labels, token features, teacher
embeddings) are found by name (`INPUTS`). Each term runs in its own shard_map island over
the global batch, and the objective is the weighted sum. Metrics are namespaced by term
with the modalities spelt out: `image_text/loss`, `image_text/acc_image_to_text`.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from mmjax import shapes
from mmjax.losses.registry import Loss, describe, get_loss, sharded_loss

# Fields of every term, whatever its loss; the loss's own options come on top.
TERM_DEFAULTS = dict(
    loss="softmax",
    modalities=("image", "text"),
    weight=1.0,
    temperature_init=math.log(1 / 0.07),  # scale = exp(t), CLIP's 1/0.07 at start
    max_scale=100.0,  # t is clamped to [0, log max_scale] after each update (open_clip)
    bias_init=None,  # float: a learned logit bias (SigLIP: -10); None: no bias
    labels="",  # batch key of integer labels of both sides (multi-positive, masked targets);
    # "@example": each example its own class (its K captions or views are its positives)
    x_labels="",  # per-side overrides of `labels`
    y_labels="",
    teacher="self",  # x_teacher / y_teacher: "self" (this step's, stop-gradient) | "ema"
    # Rows of a queue of past y embeddings (the teacher's: the stopped student's with
    # teacher="self", the EMA's with "ema") for losses taking `y_queue` (losses/queue.py,
    # train/queue.py); a multiple of the rows a step adds.
    queue_size=0,
)
# Batch entries holding the EMA model's embeddings of a modality (train/ema.py adds them).
EMA_TEACHER_PREFIX = "ema_teacher/"
# Batch entries holding a term's queue and which of its rows are filled (train/queue.py),
# and the metrics entries the objective hands back with this step's rows for it.
QUEUE_PREFIX, QUEUE_VALID_PREFIX, QUEUE_PUSH_PREFIX = "queue/", "queue_valid/", "queue_push/"
# Batch entries holding a mixed modality's soft targets [B, B] (data/patchmix.py).
TARGETS_PREFIX = "patchmix_targets/"
TEACHERS = ("self", "ema")

Outputs = Mapping[str, Mapping[str, jax.Array]]  # {modality: {"embedding", "tokens", ...}}


@dataclasses.dataclass(frozen=True)
class Term:
    name: str
    x: str
    y: str
    weight: float
    loss: Loss
    config: ml_collections.ConfigDict

    def label_key(self, side: str) -> str:
        key = self.config[f"{side}_labels"] or self.config.labels
        if not key:
            raise ValueError(
                f"config.objectives.{self.name}: loss {self.loss.name!r} needs labels; set"
                f" labels (or {side}_labels) to a batch key, e.g. labels='label'."
            )
        return key


EXAMPLE = "@example"  # `labels=EXAMPLE`: each example its own class (1-to-K captions, views)


def rows(embedding: jax.Array) -> jax.Array:
    """[B, d], or [B, K, d] (K rows per example: captions, views) -> [B * K, d]."""
    return embedding.reshape(-1, embedding.shape[-1])


def _labels(side: str):
    """A side's labels, one per row: the batch's labels (or the example index for
    `EXAMPLE`), repeated for modalities with K rows per example."""

    def get(term: "Term", outputs: "Outputs", batch: Mapping[str, jax.Array]) -> jax.Array:
        embedding = outputs[getattr(term, side)]["embedding"]
        key = term.label_key(side)
        if key == EXAMPLE:
            labels = jnp.arange(embedding.shape[0], dtype=jnp.int32)
        else:
            labels = batch[key].astype(jnp.int32)
        return jnp.repeat(labels, math.prod(embedding.shape[1:-1]))

    return get


def _output(side: str, key: str, stop_gradient: bool = False):
    def get(term: Term, outputs: Outputs, batch: Mapping[str, jax.Array]) -> jax.Array:
        value = outputs[getattr(term, side)][key]
        return jax.lax.stop_gradient(value) if stop_gradient else value

    return get


def _teacher(side: str):
    """This step's embeddings without gradient, or (`teacher="ema"`) the EMA model's."""

    def get(term: Term, outputs: Outputs, batch: Mapping[str, jax.Array]) -> jax.Array:
        modality = getattr(term, side)
        if term.config.get("teacher", "self") == "ema":
            return rows(batch[EMA_TEACHER_PREFIX + modality])
        return rows(jax.lax.stop_gradient(outputs[modality]["embedding"]))

    return get


# Loss input name -> how a term finds it (from the towers' outputs or the batch).
INPUTS: dict[str, Callable[[Term, Outputs, Mapping], jax.Array]] = {
    "x_labels": _labels("x"),
    "y_labels": _labels("y"),
    "x_tokens": _output("x", "tokens"),
    "y_tokens": _output("y", "tokens"),
    "x_token_mask": _output("x", "token_mask"),
    "y_token_mask": _output("y", "token_mask"),
    # Soft targets' "teacher": this step's embeddings without gradient, or the EMA's.
    "x_teacher": _teacher("x"),
    "y_teacher": _teacher("y"),
    "x_values": lambda term, outputs, batch: outputs[term.x]["values"],  # heads' losses
    "x_targets": lambda term, outputs, batch: batch[TARGETS_PREFIX + term.x],  # PatchMix
    "y_queue": lambda term, outputs, batch: batch[QUEUE_PREFIX + term.name],
    "y_queue_valid": lambda term, outputs, batch: batch[QUEUE_VALID_PREFIX + term.name],
}
TOKEN_INPUTS = ("x_tokens", "y_tokens", "x_token_mask", "y_token_mask")


def term_config(loss: str, modalities: tuple[str, str], **fields: Any) -> ml_collections.ConfigDict:
    """A complete term config: the common fields and `loss`'s options, with `fields` set."""
    _, options = describe(loss)
    c = ml_collections.ConfigDict({**TERM_DEFAULTS, **options})
    c.bias_init = ml_collections.FieldReference(None, field_type=float)
    c.loss, c.modalities = loss, tuple(modalities)
    for k, v in fields.items():
        if k not in c:
            known = ", ".join(sorted(c))
            raise ValueError(f"Unknown objective field {k!r} for loss {loss!r}; known: {known}.")
        c[k] = v
    return c


def rename(metrics: Mapping[str, jax.Array], x: str, y: str) -> dict[str, jax.Array]:
    """loss_x2y -> loss_image_to_text, acc_y2x -> acc_text_to_image."""
    out = {}
    for k, v in metrics.items():
        out[k.replace("x2y", f"{x}_to_{y}").replace("y2x", f"{y}_to_{x}")] = v
    return out


class Objective:
    """The weighted sum of every term of `config.objectives`, over the global batch."""

    def __init__(self, objectives: ml_collections.ConfigDict, mesh: Mesh):
        self.terms: list[Term] = []
        self._sharded = {}
        for name, c in objectives.items():
            if len(c.modalities) != 2:
                raise ValueError(
                    f"config.objectives.{name}.modalities must name two modalities, got"
                    f" {tuple(c.modalities)}."
                )
            loss = get_loss(c.loss, c)
            unknown = [i for i in loss.inputs if i not in INPUTS]
            if unknown:
                raise ValueError(f"Loss {c.loss!r} takes inputs {unknown} that no term provides.")
            if c.get("teacher", "self") not in TEACHERS:
                raise ValueError(f"config.objectives.{name}.teacher: use one of {TEACHERS}.")
            if ("y_queue" in loss.inputs) != (c.get("queue_size", 0) > 0):
                raise ValueError(
                    f"config.objectives.{name}: queue_size > 0 goes with a loss that takes a"
                    f" queue (softmax_queue, moco) and only with one; got loss {c.loss!r},"
                    f" queue_size={c.get('queue_size', 0)}."
                )
            term = Term(name, c.modalities[0], c.modalities[1], float(c.weight), loss, c)
            self.terms.append(term)
            self._sharded[name] = sharded_loss(loss, mesh)
        if not self.terms:
            raise ValueError("config.objectives is empty: add at least one term.")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Every modality some term reads, in order of first use (not the heads whose
        per-example values a term averages: the model computes them)."""
        towers = [t for t in self.terms if "x_values" not in t.loss.inputs]
        return tuple(dict.fromkeys(m for t in towers for m in (t.x, t.y)))

    @property
    def token_modalities(self) -> tuple[str, ...]:
        """Modalities whose per-token outputs some term needs."""
        out = []
        for t in self.terms:
            for i in t.loss.inputs:
                if i in TOKEN_INPUTS:
                    out.append(t.x if i.startswith("x_") else t.y)
        return tuple(dict.fromkeys(out))

    @property
    def ema_teacher_modalities(self) -> tuple[str, ...]:
        """Modalities whose EMA-model embeddings some term reads as its teacher."""
        out = []
        for t in self.terms:
            if t.config.get("teacher", "self") == "ema":
                out += [getattr(t, s) for s in ("x", "y") if f"{s}_teacher" in t.loss.inputs]
                if "y_queue" in t.loss.inputs:  # the queue holds the teacher's rows
                    out.append(t.y)
        return tuple(dict.fromkeys(out))

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """Batch entries besides the towers' inputs that the terms read (labels, EMA
        teachers' embeddings, queues, soft target matrices)."""
        keys = []
        for t in self.terms:
            for side in ("x", "y"):
                if f"{side}_labels" in t.loss.inputs and t.label_key(side) != EXAMPLE:
                    keys.append(t.label_key(side))
        keys += [EMA_TEACHER_PREFIX + m for m in self.ema_teacher_modalities]
        keys += [TARGETS_PREFIX + t.x for t in self.terms if "x_targets" in t.loss.inputs]
        for t in self.queue_terms:
            keys += [QUEUE_PREFIX + t.name, QUEUE_VALID_PREFIX + t.name]
        return tuple(dict.fromkeys(keys))

    @property
    def queue_terms(self) -> tuple[Term, ...]:
        """Terms with a queue of past y embeddings."""
        return tuple(t for t in self.terms if "y_queue" in t.loss.inputs)

    def queue_rows(self, term: Term, outputs: Outputs, batch: Mapping) -> jax.Array:
        """This step's rows for `term`'s queue: its teacher's y embeddings, no gradient."""
        return jax.lax.stop_gradient(_teacher("y")(term, outputs, batch))

    def __call__(
        self,
        outputs: Outputs,
        logits: Mapping[str, tuple[jax.Array, jax.Array]],
        batch: Mapping[str, jax.Array],
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(total loss, metrics): each term's loss, its metrics, scale and bias."""
        total = jnp.zeros((), jnp.float32)
        metrics = {}
        for t in self.terms:
            scale, bias = logits[t.name]
            inputs = {i: INPUTS[i](t, outputs, batch) for i in t.loss.inputs}
            if "x_values" in inputs:  # a head's per-example values, [B] -> [B, 1]
                x = y = inputs["x_values"][:, None]
            else:
                x, y = rows(outputs[t.x]["embedding"]), rows(outputs[t.y]["embedding"])
            shapes.term_inputs(t.name, t.x, x, t.y, y, scale, bias)
            loss, m = self._sharded[t.name](x, y, scale, bias, **inputs)
            total = total + t.weight * loss
            named = rename(m, t.x, t.y)
            metrics |= {f"{t.name}/{k}": v for k, v in named.items()}
            metrics |= {f"{t.name}/loss": loss, f"{t.name}/scale": scale, f"{t.name}/bias": bias}
            if "y_queue" in t.loss.inputs:  # popped by the train step (train/queue.py)
                metrics[QUEUE_PUSH_PREFIX + t.name] = self.queue_rows(t, outputs, batch)
        return total, metrics
