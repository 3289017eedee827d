r"""The demo CLIP (configs/demo.py) with one self-supervised aid switched on.

  python -m mmjax.main --config=configs/demo_ssl.py:aid=views,steps=300
  python tools/ssl_study.py --dir=workdirs/ssl_study --steps=200  # docs/self_supervised.md

`aid`: none (plain CLIP) | views (a second SimCLR/SLIP-augmented view, NT-Xent between
the views) | flip (50% patch dropping alone: MAE's control) | mae (50% patch dropping +
an MAE decoder) | mlm (a bidirectional text tower + masked language modelling) |
mlm_cross (MLM cross-attending to the image tokens) | queue (a MoCo queue of the EMA
teacher's texts as extra negatives) | patchmix (a third image modality: patches of 3
images mixed, soft targets = the mixing proportions).
Every aid evaluates like the demo: zero-shot, retrieval, kNN and a linear probe at the
last step.
"""

import math

import configs.demo as demo
from mmjax import config as mmconfig

AIDS = ("none", "views", "flip", "mae", "mlm", "mlm_cross", "queue", "patchmix")


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, aid="none", steps=300, batch=128, seed=0)
    if arg.aid not in AIDS:
        raise ValueError(f"aid must be one of {AIDS}, got {arg.aid!r}.")
    c = demo.get_config(f"steps={arg.steps},batch={arg.batch}")
    with c.unlocked():
        c.seed = arg.seed  # the initialisation, the data order and every draw
        c.evals.zeroshot.every = arg.steps
        c.evals.linear_probe.every = arg.steps
        add = AID_SETTINGS[arg.aid]
        add(c)
    return mmconfig.lock(c)


def _views(c):
    c.model.towers.view = mmconfig.tower("vit", share="image")
    c.data.modalities.view = mmconfig.modality(
        "image", key="image", size=32, recrop=True, crop_scale=(0.2, 1.0), flip=0.5,
        color_jitter=0.4, grayscale=0.2, blur=0.5,
    )  # fmt: skip
    c.objectives.views = mmconfig.objective(
        "ntxent", ("image", "view"), temperature_init=math.log(10.0), weight=0.5
    )


def _flip(c):
    c.model.towers.image.token_drop = 0.5


def _mae(c):
    _flip(c)
    c.model.heads.mae = mmconfig.head("mae", tower="image", width=64, depth=1)
    c.objectives.mae = mmconfig.objective("mean", ("mae", "mae"), weight=0.5)


def _mlm(c):
    c.model.towers.text.causal = False
    c.model.towers.text.pool = "last"
    c.model.heads.mlm = mmconfig.head("mlm", tower="text", rate=0.15)
    c.objectives.mlm = mmconfig.objective("mean", ("mlm", "mlm"), weight=0.5)


def _mlm_cross(c):
    _mlm(c)
    c.model.heads.mlm.cross = "image"


def _queue(c):
    c.ema.decay = 0.99
    c.objectives.image_text = mmconfig.objective(
        "softmax_queue", ("image", "text"), queue_size=1024, teacher="ema"
    )


def _patchmix(c):
    c.model.towers.mix = mmconfig.tower("vit", share="image")
    c.patchmix.mix = mmconfig.patchmix(source="image", parts=3, patch_size=8)
    c.objectives.patchmix = mmconfig.objective("soft_matrix", ("mix", "text"), weight=0.5)


AID_SETTINGS = {
    "none": lambda c: None,
    "views": _views,
    "flip": _flip,
    "mae": _mae,
    "mlm": _mlm,
    "mlm_cross": _mlm_cross,
    "queue": _queue,
    "patchmix": _patchmix,
}
