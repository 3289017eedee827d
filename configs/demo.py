r"""A micro CLIP that learns the synthetic captioned-shapes task on a laptop CPU.

  python -m mmjax.main --config=configs/demo.py
  python -m mmjax.main --config=configs/demo.py:drop=0.5,until=800   # FLIP patch dropout

About 0.3M parameters, 32-pixel images; reaches high zero-shot accuracy on the
held-out split in a few minutes on 2 cores. `drop`: the fraction of image patches each
training example drops (FLIP), `until`: the step from which it keeps them all (0: never).
"""

from mmjax import config as mmconfig


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, steps=1000, batch=128, drop=0.0, until=0)
    c = mmconfig.base()
    c.batch_size = arg.batch
    c.total_steps = arg.steps
    c.log_every = 100
    c.ckpt_every = 250
    c.keep_ckpts = 2
    c.model.embed_dim = 64
    c.model.towers.image = mmconfig.tower(
        "vit", variant="mu/8", pool="gap", token_drop=arg.drop, token_drop_until=arg.until
    )
    c.model.towers.text = mmconfig.tower(
        "text", width=64, depth=2, num_heads=2, mlp_dim=256, vocab_size=1024, context_length=16
    )
    c.optim.lr = 2e-3
    c.optim.weight_decay = 0.05
    c.schedule.warmup_steps = 100
    c.data.modalities.image.size = 32
    c.data.num_threads = 2
    c.data.synthetic.num_eval = 1000
    c.evals.zeroshot.every = 200
    c.evals.zeroshot.batch_size = 500
    # Retrieval with five captions per image and kNN on frozen features (train split ->
    # held-out split) at the end; the linear probe (about 10 s: a sweep of 15 L-BFGS
    # fits) only standalone. All four run with --mode=eval (docs/evals.md).
    c.evals.retrieval = dict(type="retrieval", every=arg.steps, batch_size=500)
    c.evals.knn = dict(type="knn", every=arg.steps, batch_size=500)
    c.evals.linear_probe = dict(type="linear_probe", every=0, batch_size=500)
    return mmconfig.lock(c)
