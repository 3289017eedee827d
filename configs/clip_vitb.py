r"""CLIP ViT-B/16 (Radford et al. 2021), the paper's recipe in open_clip's ViT-B-16 model.

  python -m mmjax.main --config=configs/clip_vitb.py --config.data.path=...
  python -m mmjax.main --config=configs/clip_vitb.py:runlocal      # a few steps on a CPU

Sources, typed into tests/test_config.py:
  * the CLIP paper, Appendix F, Table 19 (common hyperparameters): batch 32768, vocabulary
    49408, 32 epochs (of 400M pairs: 12.8B samples seen), maximum temperature 100, weight
    decay 0.2, 2000 warm-up iterations, Adam beta1 0.9, and for ViTs beta2 0.98, eps 1e-6;
    Table 21 (CLIP-ViT hyperparameters): ViT-B/16 at 224 px, lr 5e-4, embedding 512, text
    tower 12 layers, 512 wide, 8 heads. Cosine schedule; temperature initialised to 0.07.
  * open_clip's ViT-B-16 (`model_configs/ViT-B-16.json`, OpenAI's architecture): a
    LayerNorm on the patch tokens before the blocks (`ln_pre`), no patch-embedding bias,
    context 77: 149,620,737 parameters, printed at start.
  * weight decay as the paper ("all weights that are not gains or biases") and open_clip's
    training script (`main.py`: no decay where `p.ndim < 2` or the name has "bn", "ln",
    "bias" or "logit_scale") apply it: every weight matrix and also the token and position
    embeddings, not the class token, norms, biases or the temperature. No gradient
    clipping (neither the paper nor open_clip's default uses it). bfloat16 activations.
"""

from mmjax import config as mmconfig

# open_clip decays every tensor of 2+ dimensions but norms, biases and the temperature:
# besides the weight matrices (decayed by default), the embeddings below.
OPEN_CLIP_DECAYED = ((r"(^|/)pos_embed$", 1.0), (r"/token_embed/embedding$", 1.0))


def open_clip_vit(variant: str, **fields):
    """An image tower built as open_clip's (and OpenAI's) ViTs are: ln_pre, no patch bias."""
    return mmconfig.tower("vit", variant=variant, pre_norm=True, patch_bias=False, **fields)


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, runlocal=False)
    c = mmconfig.base()
    c.batch_size = 32768
    c.total_steps = 32 * 400_000_000 // 32768  # 32 epochs of 400M pairs
    c.log_every = 100
    c.ckpt_every = 2000
    c.model.embed_dim = 512
    c.model.towers.image = open_clip_vit("B/16")
    c.model.towers.text = mmconfig.tower("text")  # 12 layers, 512 wide, 8 heads, context 77
    c.model.dtype = "bfloat16"
    c.objectives.image_text = mmconfig.objective("softmax", ("image", "text"))
    c.optim.lr = 5e-4
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-6
    c.optim.weight_decay = 0.2
    c.optim.wd_mults = OPEN_CLIP_DECAYED
    c.optim.grad_clip = 0.0
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 2000
    c.data.source = "wds"  # img2dataset webdataset shards at config.data.path
    c.data.modalities.text.tokenizer = "clip_bpe"  # ids equal open_clip's tokenize()
    c.data.modalities.image.size = 224
    c.evals.zeroshot.every = 5000

    if arg.runlocal:  # the same model, shrunk in batch, resolution and steps for a CPU
        mmconfig.shrink_for_cpu(c)
    return mmconfig.lock(c)
