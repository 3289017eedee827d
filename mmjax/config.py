"""Helpers for configs: `arg` strings ("runlocal,res=64") and config validation."""

import dataclasses
from typing import Any

import ml_collections

from mmjax.errors import UserError, suggest


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses a config arg like "runlocal,res=224" into a ConfigDict.

    A bare word sets a boolean flag; `key=value` casts the value to the type of the default.
    Unknown keys and values of the wrong type fail (`ConfigError`), so a typo in a launch
    command never passes silently.
    """
    result = ml_collections.ConfigDict(defaults)
    if not arg:
        return result
    for part in arg.split(","):
        part = part.strip()
        if not part:
            continue
        key, _, value = part.partition("=")
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(
                f"Unknown config arg {key!r} in {arg!r}; known: {known}.{suggest(key, defaults)}"
            )
        default = defaults[key]
        if not value:
            result[key] = True
        elif isinstance(default, bool):
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ConfigError(f"config arg {part!r}: {key} takes true or false.")
            result[key] = value.lower() in ("1", "true", "yes")
        elif default is None:
            result[key] = value
        else:
            try:
                result[key] = type(default)(value)
            except ValueError:
                kind = {int: "an integer", float: "a number"}.get(type(default), "a value")
                raise ConfigError(
                    f"config arg {part!r}: {key} takes {kind} (default {default!r}), not {value!r}."
                ) from None
    return result


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Sets dotted fields ({"optim.lr": 1e-3}) in place, as `--config.optim.lr=1e-3` would;
    an unknown field or a value of the wrong type raises `ConfigError` naming it."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for depth, p in enumerate([*parents, leaf]):
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                where = ".".join(parents[:depth]) or "the config"
                known = list(node) if isinstance(node, ml_collections.ConfigDict) else []
                hint = suggest(p, known)
                raise ConfigError(f"override {key!r}: {where} has no field {p!r}.{hint}")
            if depth < len(parents):
                node = node[p]
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"override {key}={value!r}: {e}") from None
    return config


def load_config(config_flag: str, overrides: dict[str, Any] | None = None):
    """`configs/demo.py:steps=10` -> its `get_config("steps=10")`, then `overrides`.

    A missing or failing config file raises a `UserError` naming it (mmjax/cli.py).
    """
    from mmjax import cli

    return apply_overrides(cli.load_file(config_flag), overrides or {})


def shrink_for_cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A recipe's `runlocal` variant: the same model, with the batch, resolution, steps and
    evaluation shrunk so that a few steps run on a CPU."""
    c.batch_size = 16
    c.total_steps = 4
    c.log_every = 1
    c.ckpt_every = 4
    c.evals.zeroshot.every = 4
    c.evals.zeroshot.batch_size = 16
    c.model.dtype = "float32"
    c.schedule.warmup_steps = 2
    c.data.modalities.image.size = 64
    c.data.num_threads = 2
    c.data.synthetic.num_eval = 64
    return c


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks a config so that setting a field it does not have raises."""
    config.lock()
    return config


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, with what to change."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"config.{self.field}: {self.message}"


class ConfigError(UserError, ValueError):
    """A config that cannot run, with one line per problem."""


def check(
    config: ml_collections.ConfigDict, num_devices: int | None, num_processes: int | None
) -> None:
    """Fails before anything is built on a config that cannot run, listing every problem
    with its field and what to change (every check is in mmjax/validate/)."""
    from mmjax import validate

    validate.check(config, num_devices, num_processes)


def _entry(
    kind: str, defaults: dict[str, Any], fields: dict[str, Any]
) -> ml_collections.ConfigDict:
    """A config entry from its type's defaults; unknown fields fail, naming the known ones."""
    unknown = sorted(set(fields) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults))
        hint = suggest(unknown[0], defaults)
        raise ConfigError(f"Unknown field(s) {unknown} for {kind}; known: {known}.{hint}")
    c = ml_collections.ConfigDict(defaults)
    for k, v in fields.items():
        c[k] = v
    return c


def tower(type: str, **fields: Any) -> ml_collections.ConfigDict:
    """A `config.model.towers` entry: every field of tower `type` (models/), `fields` set."""
    from mmjax import models

    return _entry(f"tower type {type!r}", models.tower_defaults(type), fields)


def modality(type: str, **fields: Any) -> ml_collections.ConfigDict:
    """A `config.data.modalities` entry: every field of modality `type` (data/modalities.py)."""
    from mmjax.data import modalities

    return _entry(f"modality type {type!r}", modalities.modality_defaults(type), fields)


def head(type: str, **fields: Any) -> ml_collections.ConfigDict:
    """A `config.model.heads` entry: a self-supervised head (models/heads.py: mae, mlm)."""
    from mmjax.models import heads

    return _entry(f"head type {type!r}", heads.head_defaults(type), fields)


def patchmix(**fields: Any) -> ml_collections.ConfigDict:
    """A `config.patchmix` entry: a modality of patch-mixed images (data/patchmix.py)."""
    from mmjax.data import patchmix as patchmix_lib

    return _entry("patchmix", patchmix_lib.DEFAULTS, fields)


def objective(loss: str, modalities: tuple[str, str], **fields: Any) -> ml_collections.ConfigDict:
    """A `config.objectives` term: `loss` between two modalities, with its options."""
    from mmjax.losses import objectives

    return objectives.term_config(loss, modalities, **fields)


def base() -> ml_collections.ConfigDict:
    """Every field the code reads, with its default. Recipes in configs/ override these.

    The default model is CLIP's: an image tower and a text tower, one softmax term.
    Recipes add towers (`tower`), data modalities (`modality`) and terms (`objective`),
    and lock the config (`lock`), so a misspelt override fails.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 256  # global batch, over all devices and processes
    c.accum_steps = 1  # >1: exact gradient accumulation over micro-batches (GradCache)
    # With accum_steps > 1: feed micro-batches from the host, one jitted call each, both
    # passes (train/streamed.py), so the global input batch never sits on the devices.
    c.accum_streamed = False
    c.total_steps = 1000
    c.stop_at_step = 0  # >0: save and exit at this step (to fit a job time limit); resumable
    c.log_every = 50
    c.ckpt_every = 1000
    c.keep_ckpts = 3
    c.check_memory = True  # stop before training if the compiled step does not fit
    c.max_nonfinite_in_a_row = 20  # stop after this many skipped non-finite steps; 0: never
    c.preemption_check_every = 10  # multi-process runs agree on SIGTERM every N steps
    # Persistent XLA compilation cache: relative = inside the workdir; "" = off.
    c.compile_cache_dir = "xla_cache"
    c.profile = ml_collections.ConfigDict(dict(start=0, steps=3))  # start > 0: trace steps

    c.model = ml_collections.ConfigDict()
    c.model.embed_dim = 512  # the joint space every tower projects into
    c.model.act = "gelu"
    c.model.dtype = "float32"  # activations
    c.model.param_dtype = "float32"  # parameters as stored and updated (bfloat16 halves them)
    c.model.remat = "none"  # none | full | dots | names:a,b (models/layers.py); per tower too
    c.model.attention = "auto"  # auto (cuDNN flash on GPU for bf16, else XLA) | xla | cudnn
    c.model.proj_bias = False
    # Modality name -> tower config (`type` picks the code: vit, text, ...; models/).
    c.model.towers = ml_collections.ConfigDict()
    c.model.towers.image = tower("vit")
    c.model.towers.text = tower("text")
    # Head name -> a self-supervised head on a tower (mae, mlm; models/heads.py), its
    # per-example loss averaged by an objective term `objective("mean", (name, name))`.
    c.model.heads = ml_collections.ConfigDict()
    # Name -> a modality of the source images mixed at patch level within the global batch,
    # with soft targets for `soft_matrix` (PatchMix; data/patchmix.py); its tower `share`s.
    c.patchmix = ml_collections.ConfigDict()

    # Term name -> a weighted loss between two modalities (losses/objectives.py).
    c.objectives = ml_collections.ConfigDict()
    c.objectives.image_text = objective("softmax", ("image", "text"))

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.2
    c.optim.grad_clip = 1.0  # global norm; 0 disables
    c.optim.moment_dtype = "float32"  # Adam's first and second moments; bfloat16 halves them
    c.optim.lr_scaling = "none"  # none | linear | sqrt: scale lr by batch_size / lr_base_batch
    c.optim.lr_base_batch = 256
    # Parameter groups by regexes over names like "image/encoder/blocks/mlp/fc1/kernel"
    # (mmjax/optim.py, mmjax/params.py). Rules are ((regex, multiplier), ...), first match wins.
    c.optim.freeze = ()  # regexes: no gradient, no optimizer state (towers: `lock=True`)
    c.optim.lr_mults = ()
    c.optim.wd_mults = ()  # unmatched: 1 for weight matrices (kernels), 0 for the rest
    c.optim.layer_decay = 1.0  # <1: layer-wise lr decay (fine-tuning)
    c.optim.layer_decay_towers = ()  # the towers it applies to; () = all

    # Exponential moving average of the parameters (train/ema.py); evaluators pick it with
    # `weights="ema"` or "both".
    c.ema = ml_collections.ConfigDict()
    c.ema.decay = 0.0  # 0: no EMA; e.g. 0.999

    # Start from another run's parameters (all, or those matching `params` regexes), e.g.
    # LiT's pre-trained image tower: workdir="...", params=("^image/",).
    c.init = ml_collections.ConfigDict()
    c.init.workdir = ""
    c.init.step = 0  # 0: its latest checkpoint
    c.init.params = ()

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "warmup_cosine"  # | warmup_constant_cooldown | inverse_sqrt
    c.schedule.warmup_steps = 100
    c.schedule.end_factor = 0.0  # final lr as a fraction of the peak
    # warmup_constant_cooldown only: cooldown length (steps, or a fraction of the run).
    c.schedule.cooldown_steps = 0
    c.schedule.cooldown_fraction = 0.2
    c.schedule.cooldown_shape = "1-sqrt"  # or "linear"

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all the devices the other axes leave
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    # Logical axis name -> mesh axes. Batch over (data, fsdp); weights over fsdp/tensor.
    c.mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("joint", None),
        ("kv", None),
        ("length", None),
        ("layers", None),
        ("norm", None),
    )

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize() at start
    c.distributed.coordinator_address = ""  # "" lets JAX find it (Cloud TPU, SLURM)
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process runs on CPU

    c.data = ml_collections.ConfigDict()
    c.data.source = "synthetic"  # synthetic | wds | arrayrecord | tfds (docs/data.md)
    c.data.path = ""  # files, folder, glob, {00000..00999}.tar, gs://...; tfds: dataset name
    # Modality name -> what the batch holds for it and how a record's field becomes it.
    c.data.modalities = ml_collections.ConfigDict()
    c.data.modalities.image = modality("image")
    c.data.modalities.text = modality("text")
    c.data.num_threads = 8
    c.data.prefetch = 4
    c.data.worker_processes = 0  # wds: decode in this many processes instead of threads
    c.data.device_prefetch = 2  # global batches put on the devices ahead of the step; 0: none
    c.data.shuffle_buffer = 10_000  # streaming: examples shuffled together (a window)
    c.data.cycle_length = 8  # streaming: shards each process reads at once
    c.data.tfds_split = "train"
    c.data.tfds_data_dir = ""
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.num_train = 10_000_000
    c.data.synthetic.num_eval = 1000
    c.data.synthetic.captions = 0  # >0: records carry that many captions ("captions")

    # Evaluators by name: `type` picks the code (evals/registry.py), `every` the period.
    c.evals = ml_collections.ConfigDict()
    c.evals.zeroshot = ml_collections.ConfigDict(
        dict(
            type="zeroshot",
            every=1000,
            batch_size=256,
            dataset="synthetic",
            templates="",
            weights="raw",  # raw | ema | both: which parameters evaluate
        )
    )
    return c
