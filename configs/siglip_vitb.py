r"""SigLIP ViT-B/16 (Zhai et al. 2023) as big_vision releases it.

  python -m mmjax.main --config=configs/siglip_vitb.py:spm=c4_en.model --config.data.path=...
  python -m mmjax.main --config=configs/siglip_vitb.py:runlocal

Sources, typed into tests/test_config.py:
  * the SigLIP paper: the sigmoid loss with a learned temperature and bias initialised to
    t' = log 10 and b = -10 (Sec. 3); batch 32k; lr 1e-3 and weight decay 1e-4.
  * big_vision's SigLIP B/16 (`configs/proj/image_text/SigLIP_demo.ipynb`, the released
    `webli_en_b16_224`): image tower B/16 with MAP-head pooling (`pool_type='map'`); text
    tower of the same size as the image tower (`text_transformer`, variant B: 12 layers,
    768 wide, 12 heads), bidirectional, pooled at the last token; a 768-d joint space;
    64 text tokens from a 32,000-piece SentencePiece vocabulary (C4 English); pixels in
    [-1, 1] (mean = std = 0.5).
The SentencePiece model cannot be shipped: pass it as `spm=PATH` (a local or gs:// path);
without one, the simple hashing tokenizer stands in (synthetic data, runlocal). mmjax's
SentencePiece ids are the model's pieces shifted by one, with its own start and end tokens
(32,003 ids), and padding is masked rather than filled with EOS, so text towers trained
here and big_vision's checkpoints differ in those ids; big_vision also gives the image
tower no projection (its MAP output is the embedding) where mmjax has a 768 x 768 one.
"""

import math

from mmjax import config as mmconfig

SPM_PIECES = 32_000  # big_vision's c4_en SentencePiece model


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, runlocal=False, spm="")
    c = mmconfig.base()
    c.batch_size = 32768
    c.total_steps = 12_800_000_000 // 32768
    c.log_every = 100
    c.ckpt_every = 2000
    c.model.embed_dim = 768
    c.model.dtype = "bfloat16"
    c.model.towers.image = mmconfig.tower(
        "vit", variant="B/16", pool="map", mean=(0.5,) * 3, std=(0.5,) * 3
    )
    c.model.towers.text = mmconfig.tower(
        "text",
        width=768,
        depth=12,
        num_heads=12,
        mlp_dim=3072,
        vocab_size=SPM_PIECES + 3,
        context_length=64,
        causal=False,
        pool="last",
    )
    c.objectives.image_text = mmconfig.objective(
        "sigmoid", ("image", "text"), temperature_init=math.log(10.0), bias_init=-10.0
    )
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 5_000
    c.data.source = "wds"
    c.data.modalities.image.size = 224
    c.data.modalities.text.tokenizer = "sentencepiece" if arg.spm else "simple"
    c.data.modalities.text.tokenizer_model = arg.spm
    c.evals.zeroshot.every = 5000
    if arg.runlocal:  # the same model, shrunk in batch, resolution and steps for a CPU
        mmconfig.shrink_for_cpu(c)
    return mmconfig.lock(c)
