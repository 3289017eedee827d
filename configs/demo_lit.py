r"""LiT on the demo (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text
Tuning"): the image tower of a trained demo run, locked; a new text tower trained to it.

  python -m mmjax.main --config=configs/demo.py                        # trains workdirs/demo
  python -m mmjax.main --config=configs/demo_lit.py                    # LiT from it
  python -m mmjax.main --config=configs/demo_lit.py:init=DIR,steps=500

configs/demo.py's model, data and evaluation, with `config.init` taking the image tower
from the demo run's latest checkpoint (`init`: its workdir) and `lock=True` on it: no
gradient, no optimizer state and no weight decay there, so the step is cheaper and the
tower ends exactly as it started; the text tower and the temperature start from scratch.
"""

import pathlib

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, init="workdirs/demo", steps=1000, batch=128)
    demo = pathlib.Path(__file__).with_name("demo.py")
    c = mmconfig.load_config(f"{demo}:steps={arg.steps},batch={arg.batch}")
    c.model.towers.image.lock = True
    c.init.workdir = arg.init
    c.init.params = ("^image/",)
    return c
