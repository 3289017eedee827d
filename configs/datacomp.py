r"""The DataComp benchmark's training (Gadre et al. 2023): CLIP at a fixed compute scale.

  python -m mmjax.main --config=configs/datacomp.py:scale=small --config.data.path=...
  python -m mmjax.main --config=configs/datacomp.py:scale=medium --config.data.path=...
  python -m mmjax.main --config=configs/datacomp.py:scale=small,runlocal

DataComp fixes the training and lets the data vary. Its settings, as its repository's
`scale_configs.py` and `train.py` set them (they launch open_clip's trainer), typed into
tests/test_config.py:

  scale    model      samples seen     batch   lr     warmup  beta2
  small    ViT-B/32   12.8M            4096    5e-4   500     0.98
  medium   ViT-B/32   128M             4096    5e-4   500     0.98
  large    ViT-B/16   1.28B            8192    5e-4   500     0.98
  xlarge   ViT-L/14   12.8B            90112   1e-3   10000   0.95

and for every scale open_clip's defaults: AdamW beta1 0.9, eps 1e-6, weight decay 0.2
(open_clip's decayed set, configs/clip_vitb.py), cosine decay to 0, no gradient clipping,
224 px, open_clip's RandomResizedCrop(scale 0.9-1) augmentation, a loss over the global
batch (`--local-loss --gather-with-grad`: what mmjax's softmax computes), activation
checkpointing (`--grad-checkpointing`: remat "full"), mixed precision (bfloat16 here).
The pool of candidates is the data: point `data.path` at the filtered shards.
"""

import pathlib

from mmjax import config as mmconfig

# scale -> (open_clip model, samples seen, global batch, lr, warmup steps, Adam beta2)
SCALES = {
    "small": ("B/32", 12_800_000, 4096, 5e-4, 500, 0.98),
    "medium": ("B/32", 128_000_000, 4096, 5e-4, 500, 0.98),
    "large": ("B/16", 1_280_000_000, 8192, 5e-4, 500, 0.98),
    "xlarge": ("L/14", 12_800_000_000, 90112, 1e-3, 10_000, 0.95),
}


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, scale="small", runlocal=False)
    if arg.scale not in SCALES:
        raise ValueError(f"Unknown DataComp scale {arg.scale!r}; known: {list(SCALES)}.")
    variant, samples, batch, lr, warmup, b2 = SCALES[arg.scale]
    base = pathlib.Path(__file__).with_name("clip_vitb.py")
    c = mmconfig.load_config(f"{base}:runlocal" if arg.runlocal else str(base))
    c.model.towers.image.variant = variant
    if variant == "L/14":  # open_clip's ViT-L-14: a 768-wide text tower and joint space
        c.model.embed_dim = 768
        c.model.towers.text.width, c.model.towers.text.num_heads = 768, 12
        c.model.towers.text.mlp_dim = 3072
    c.model.remat = "full"
    c.optim.lr = lr
    c.optim.b2 = b2
    if not arg.runlocal:
        c.batch_size = batch
        c.total_steps = samples // batch
        c.schedule.warmup_steps = warmup
        c.ckpt_every = 1000
        c.evals.zeroshot.every = 0  # DataComp evaluates the final model (its 38 tasks)
    return c
