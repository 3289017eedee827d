r"""CLIP ViT-L/14 (Radford et al. 2021) in open_clip's ViT-L-14 model: the model zoo's L.

  python -m mmjax.main --config=configs/clip_vitl14.py --config.data.path=...
  python -m mmjax.main --config=configs/clip_vitl14.py:runlocal

configs/clip_vitb.py's recipe (the paper's Table 19, open_clip's weight decay) with the
paper's Table 21 row for ViT-L/14: lr 4e-4, embedding 768, 224 px; image tower 24 layers,
1024 wide, 16 heads; text tower 12 layers, 768 wide, 12 heads. As open_clip's
`model_configs/ViT-L-14.json`: 427.62M parameters (its docs/model_profile.csv).
"""

import pathlib

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    base = pathlib.Path(__file__).with_name("clip_vitb.py")
    c = mmconfig.load_config(f"{base}:{arg}" if arg else str(base))
    c.model.embed_dim = 768
    c.model.towers.image.variant = "L/14"
    c.model.towers.text.width = 768
    c.model.towers.text.num_heads = 12
    c.model.towers.text.mlp_dim = 3072
    c.optim.lr = 4e-4
    if mmconfig.parse_arg(arg, runlocal=False).runlocal:
        c.data.modalities.image.size = 56  # a multiple of the patch
    return c
