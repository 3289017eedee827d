"""Helpers for configs: `arg` strings ("runlocal,res=64") and config validation."""

import dataclasses
import importlib.util
import pathlib
from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses a config arg like "runlocal,res=224" into a ConfigDict.

    A bare word sets a boolean flag; `key=value` casts the value to the type of the default.
    Unknown keys fail, so a typo in a launch command never passes silently.
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
            known = ", ".join(sorted(defaults))
            raise ValueError(f"Unknown config arg {key!r} in {arg!r}; known: {known}.")
        default = defaults[key]
        if not value:
            result[key] = True
        elif isinstance(default, bool):
            result[key] = value.lower() in ("1", "true", "yes")
        elif default is None:
            result[key] = value
        else:
            result[key] = type(default)(value)
    return result


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Sets dotted fields ({"optim.lr": 1e-3}) in place, as `--config.optim.lr=1e-3` would."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def load_config(config_flag: str, overrides: dict[str, Any] | None = None):
    """`configs/demo.py:steps=10` -> its `get_config("steps=10")`, then `overrides`."""
    path, _, arg = config_flag.partition(":")
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return apply_overrides(module.get_config(arg or None), overrides or {})


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


class ConfigError(ValueError):
    """A config that cannot run, with one line per problem."""


def check(config: ml_collections.ConfigDict, num_devices: int, num_processes: int) -> None:
    """Fails before compilation on a config that cannot run, saying what to change."""
    problems: list[Problem] = []
    batch = config.batch_size
    if config.accum_steps < 1:
        problems.append(Problem("accum_steps", f"must be >= 1, got {config.accum_steps}."))
    elif batch <= 0:
        problems.append(Problem("batch_size", f"must be positive, got {batch}."))
    elif batch % num_devices:
        problems.append(
            Problem(
                "batch_size",
                f"{batch} is not divisible by the {num_devices} devices; use a multiple"
                f" of {num_devices}, e.g. {max(num_devices, batch // num_devices * num_devices)}.",
            )
        )
    elif batch % (num_devices * config.accum_steps):
        problems.append(
            Problem(
                "batch_size",
                f"{batch} does not split into accum_steps={config.accum_steps} micro-batches"
                f" over {num_devices} devices; use a multiple of"
                f" {num_devices * config.accum_steps}.",
            )
        )
    elif batch % num_processes:
        problems.append(
            Problem("batch_size", f"{batch} is not divisible by {num_processes} processes.")
        )
    if config.total_steps <= 0:
        problems.append(Problem("total_steps", f"must be positive, got {config.total_steps}."))
    if config.schedule.warmup_steps > config.total_steps:
        problems.append(
            Problem(
                "schedule.warmup_steps",
                f"{config.schedule.warmup_steps} exceeds total_steps={config.total_steps}.",
            )
        )
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(map(str, problems)))


def base() -> ml_collections.ConfigDict:
    """Every field the code reads, with its default. Recipes in configs/ override these.

    The returned config is locked by the recipes (`lock`), so a misspelt override fails.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 256  # global batch, over all devices and processes
    c.accum_steps = 1  # >1: exact gradient accumulation over micro-batches (GradCache)
    c.total_steps = 1000
    c.stop_at_step = 0  # >0: save and exit at this step (to fit a job time limit); resumable
    c.log_every = 50
    c.ckpt_every = 1000
    c.keep_ckpts = 3
    c.check_memory = True  # stop before training if the compiled step does not fit
    c.max_nonfinite_in_a_row = 20  # stop after this many skipped non-finite steps; 0: never
    c.preemption_check_every = 10  # multi-process runs agree on SIGTERM every N steps

    c.model = ml_collections.ConfigDict()
    c.model.name = "two_tower"
    c.model.embed_dim = 512
    c.model.act = "gelu"
    c.model.dtype = "float32"  # activations; parameters are always float32
    c.model.remat = False
    c.model.proj_bias = False
    c.model.temperature_init = 2.6592600369327779  # log(1 / 0.07)
    c.model.max_scale = 100.0
    c.model.bias_init = ml_collections.FieldReference(None, field_type=float)
    c.model.image = ml_collections.ConfigDict()
    c.model.image.variant = "B/16"
    c.model.image.width = 0  # 0: from the variant
    c.model.image.depth = 0
    c.model.image.mlp_dim = 0
    c.model.image.num_heads = 0
    c.model.image.pool = "cls"
    c.model.image.pre_norm = False
    c.model.image.patch_bias = True  # open_clip/OpenAI ViTs have none (False on import)
    c.model.text = ml_collections.ConfigDict()
    c.model.text.width = 512
    c.model.text.depth = 12
    c.model.text.mlp_dim = 2048
    c.model.text.num_heads = 8
    c.model.text.vocab_size = 49408
    c.model.text.context_length = 77
    c.model.text.causal = True
    c.model.text.pool = "eot"

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "softmax"  # softmax | sigmoid | softmax_ring | sigmoid_ring (docs/losses.md)
    c.loss.tile_size = 1024  # ring losses: local rows scored at a time
    c.loss.chunk_size = 1024  # ring losses: rows of the travelling block per ppermute

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.2
    c.optim.grad_clip = 1.0  # global norm; 0 disables
    c.optim.lr_scaling = "none"  # none | linear | sqrt: scale lr by batch_size / lr_base_batch
    c.optim.lr_base_batch = 256

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
    c.data.image_size = 224
    c.data.tokenizer = "simple"  # simple | clip_bpe | sentencepiece | bytes
    c.data.tokenizer_model = ""  # sentencepiece: the .model file
    c.data.num_threads = 8
    c.data.prefetch = 4
    c.data.image_key = "jpg;jpeg;png;webp"  # record fields to try, first present wins
    c.data.text_key = "txt"  # tfds: feature names, e.g. "image" and "captions/text"
    c.data.decoder = "auto"  # auto | pil | simplejpeg
    c.data.resizer = "auto"  # auto | pil | cv2
    c.data.crop_scale = (0.9, 1.0)  # random resized crop: area fraction (CLIP's)
    c.data.crop_ratio = (3 / 4, 4 / 3)  # and aspect range
    c.data.shuffle_buffer = 10_000  # streaming: examples shuffled together (a window)
    c.data.cycle_length = 8  # streaming: shards each process reads at once
    c.data.tfds_split = "train"
    c.data.tfds_data_dir = ""
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.num_train = 10_000_000
    c.data.synthetic.num_eval = 1000

    # Evaluators by name: `type` picks the code (evals/registry.py), `every` the period.
    c.evals = ml_collections.ConfigDict()
    c.evals.zeroshot = ml_collections.ConfigDict(
        dict(type="zeroshot", every=1000, batch_size=256, dataset="synthetic", templates="")
    )
    return c
