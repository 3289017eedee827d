r"""SigLIP ViT-B/16 (Zhai et al. 2023): the CLIP recipe with the pairwise sigmoid loss.

  python -m mmjax.main --config=configs/siglip_vitb.py --config.data.path=...
  python -m mmjax.main --config=configs/siglip_vitb.py:runlocal

Differences from configs/clip_vitb.py, as in the paper: sigmoid loss with learned
temperature and bias initialised to t = log 10 and b = -10, MAP-head pooling, AdamW
lr 1e-3 and weight decay 1e-4, 5k warmup steps. For batches beyond what an all-gather
loss fits, use --config.objectives.image_text.loss=sigmoid_ring (the same loss, exactly;
docs/losses.md).
"""

import math
import pathlib

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    clip = pathlib.Path(__file__).with_name("clip_vitb.py")
    c = mmconfig.load_config(f"{clip}:{arg}" if arg else str(clip))
    c.objectives.image_text = mmconfig.objective(
        "sigmoid", ("image", "text"), temperature_init=math.log(10.0), bias_init=-10.0
    )
    c.model.towers.image.pool = "map"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    if not mmconfig.parse_arg(arg, runlocal=False).runlocal:
        c.schedule.warmup_steps = 5_000
    return mmconfig.lock(c)
