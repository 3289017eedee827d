r"""SigLIP So400m/14 (Zhai et al. 2023; the shape of Alabdulmohsin et al. 2023, "Getting
ViT in Shape"): big_vision's `webli_en_so400m_224`, the model zoo's best SigLIP.

  python -m mmjax.main --config=configs/siglip_so400m.py:spm=c4_en.model --config.data.path=...
  python -m mmjax.main --config=configs/siglip_so400m.py:runlocal

configs/siglip_vitb.py's recipe with big_vision's So400m/14 at 224 px
(`SigLIP_demo.ipynb`): image tower So400m/14 (27 layers, 1152 wide, MLP 4304, 16 heads)
with MAP pooling, a text tower of the same shape, a 1152-d joint space and 16 text
tokens (the 224 px model; the 384 px one has 64); 45B samples seen (open_clip's table of
released models).
"""

import pathlib

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    base = pathlib.Path(__file__).with_name("siglip_vitb.py")
    c = mmconfig.load_config(f"{base}:{arg}" if arg else str(base))
    c.model.embed_dim = 1152
    c.model.towers.image.variant = "So400m/14"
    text = c.model.towers.text
    text.width, text.depth, text.num_heads, text.mlp_dim = 1152, 27, 16, 4304
    text.context_length = 16
    runlocal = mmconfig.parse_arg(arg, runlocal=False, spm="").runlocal
    if runlocal:
        c.data.modalities.image.size = 56  # a multiple of the patch
    else:
        c.total_steps = 45_000_000_000 // c.batch_size
    return c
