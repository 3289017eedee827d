r"""CLIP ViT-B/16 (Radford et al. 2021), the paper's recipe.

  python -m mmjax.main --config=configs/clip_vitb.py --config.data.path=...
  python -m mmjax.main --config=configs/clip_vitb.py:runlocal      # a few steps on a CPU

ViT-B/16 image tower, 12-layer 512-wide text tower, 49408-token vocabulary, context 77,
512-d joint space (149.62M parameters); global batch 32768, AdamW lr 5e-4,
betas (0.9, 0.98), eps 1e-6, weight decay 0.2, 10k warmup steps then cosine, 32 epochs
of 400M pairs (about 12.8B samples seen).
"""

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, runlocal=False)
    c = mmconfig.base()
    c.batch_size = 32768
    c.total_steps = 12_800_000_000 // 32768
    c.log_every = 100
    c.ckpt_every = 2000
    c.model.towers.image = mmconfig.tower("vit", variant="B/16")
    c.model.towers.text = mmconfig.tower("text")  # 12 layers, 512 wide, 8 heads, context 77
    c.model.dtype = "bfloat16"
    c.objectives.image_text = mmconfig.objective("softmax", ("image", "text"))
    c.optim.lr = 5e-4
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-6
    c.optim.weight_decay = 0.2
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 10_000
    c.data.source = "wds"  # img2dataset webdataset shards at config.data.path
    c.data.modalities.text.tokenizer = "clip_bpe"  # ids equal open_clip's tokenize()
    c.data.modalities.image.size = 224
    c.evals.zeroshot.every = 5000

    if arg.runlocal:  # the same model, shrunk in batch, resolution and steps for a CPU
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
    return mmconfig.lock(c)
