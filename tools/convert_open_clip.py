r"""open_clip <-> mmjax checkpoints (ViT CLIPs: ViT-B-32, ViT-B-16, ViT-L-14, ...).

Import open_clip / OpenAI weights into a new mmjax workdir (a step-0 checkpoint with a
fresh optimizer state, and a Python config for `--config`):

  python tools/convert_open_clip.py import --checkpoint=ViT-B-32-openai.pt \
      --model=ViT-B-32-quickgelu --workdir=workdirs/ft_b32
  python -m mmjax.main --config=workdirs/ft_b32/imported_config.py \
      --workdir=workdirs/ft_b32 --config.data.path=...

`--model` is open_clip's model name (`-quickgelu` for OpenAI's weights, which were trained
with QuickGELU; the state dict cannot tell) or the path of an open_clip model config JSON
(an `open_clip_config.json` also gives the image mean and std).

Export a workdir's checkpoint as an open_clip model folder (open_clip >= 3.0 loads it
with `create_model_and_transforms("local-dir:DIR")`; CLIP_benchmark with
`--model=local-dir:DIR`):

  python tools/convert_open_clip.py export --workdir=workdirs/ft_b32 [--step=N] \
      [--out=DIR] [--config=configs/x.py ...]

The config is the run's `config.json` unless `--config` (and `--config.x=y`) is given.
Needs `pip install -e .[interop]` for .pt/.bin files; .safetensors needs only safetensors.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging

from mmjax import cli, errors, storage
from mmjax import config as config_lib
from mmjax.errors import UsageError
from mmjax.interop import checkpoints
from mmjax.interop import open_clip as oc

_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "import: open_clip/OpenAI weights file.")
_MODEL = flags.DEFINE_string(
    "model", "", "import: open_clip model name (ViT-B-32-quickgelu, ...) or config JSON."
)
_WORKDIR = flags.DEFINE_string("workdir", "", "import: the new workdir; export: the run.")
_LR = flags.DEFINE_float("lr", 1e-5, "import: learning rate written into the config.")
_STEP = flags.DEFINE_integer("step", -1, "export: checkpoint step; -1: the latest.")
_OUT = flags.DEFINE_string("out", "", "export: output folder; default WORKDIR/open_clip.")
_FORMAT = flags.DEFINE_enum(
    "format", "safetensors", ["safetensors", "bin"], "export: weights file format."
)
# export: the run's config, --config=PATH[:ARG] and --config.x=y (mmjax/cli.py); default
# WORKDIR/config.json.
_config = None

WEIGHTS = {"safetensors": "open_clip_model.safetensors", "bin": "open_clip_pytorch_model.bin"}


def import_weights() -> None:
    if not (_CHECKPOINT.value and _MODEL.value and _WORKDIR.value):
        raise UsageError("import needs --checkpoint, --model and --workdir.")
    model = _MODEL.value
    arch = oc.arch_from_open_clip(
        oc.model_cfg_from_name_or_file(model), oc.preprocess_cfg_from_name_or_file(model)
    )
    params = oc.params_from_state_dict(oc.load_state_dict(_CHECKPOINT.value), arch)
    fields = oc.mmjax_fields(arch)
    config = config_lib.base()
    checkpoints.set_fields(config, {**fields, "optim.lr": _LR.value})
    checkpoints.save_train_state(config_lib.lock(config), params, _WORKDIR.value)
    config_path = storage.join(_WORKDIR.value, "imported_config.py")
    source = f"{_CHECKPOINT.value} ({_MODEL.value})"
    checkpoints.write_config_file(config_path, fields, source, _WORKDIR.value, _LR.value)
    print(
        f"Wrote step 0 of {_WORKDIR.value} and {config_path}. Train or evaluate with:\n"
        f"  python -m mmjax.main --config={config_path} --workdir={_WORKDIR.value}"
        " --config.data.path=..."
    )


def export_weights() -> None:
    if not _WORKDIR.value:
        raise UsageError("export needs --workdir.")
    config = _config
    if config is None:
        config = checkpoints.config_from_json(storage.join(_WORKDIR.value, "config.json"))
    arch = oc.arch_from_mmjax(config)
    params, step = checkpoints.restore_params(
        config, _WORKDIR.value, None if _STEP.value < 0 else _STEP.value
    )
    out = _OUT.value or storage.join(_WORKDIR.value, "open_clip")
    weights = storage.join(out, WEIGHTS[_FORMAT.value])
    oc.save_state_dict(oc.state_dict_from_params(params, oc.open_clip_term(config)), weights)
    config_json = json.dumps(oc.open_clip_config_json(arch), indent=2)
    storage.write_text(storage.join(out, "open_clip_config.json"), config_json)
    print(
        f"Wrote step {step} to {out}. Evaluate with:\n"
        f"  clip_benchmark eval --model=local-dir:{storage.absolute(out)} --pretrained=mmjax"
        " --dataset=cifar10 --output=result.json"
    )


COMMANDS = {"import": import_weights, "export": export_weights}


def parse(argv: list[str]) -> list[str]:
    """`--config` (export) by mmjax/cli.py, the rest by absl; a mistake ends in one line."""
    global _config
    with errors.boundary():
        _config, left = cli.parse_tool_argv(argv)
        if len(left) != 2 or left[1] not in COMMANDS:
            raise UsageError("usage: convert_open_clip.py import|export --flags (--help).")
        return left


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    # The converter's own refusals: a model or option open_clip cannot express, weights
    # that do not fit, a workdir that already holds checkpoints.
    with errors.boundary(), errors.refusals(argv[1], "mmjax", "interop"):
        COMMANDS[argv[1]]()


if __name__ == "__main__":
    app.run(main, flags_parser=parse)
