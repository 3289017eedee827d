"""Softmax vs sigmoid loss across global batch sizes 32..4096 at fixed samples seen.

A miniature of the SigLIP batch-size study (Zhai et al. 2023, Fig. 2/3) on the synthetic
source with the demo model (docs/scaling_study.md):

  python tools/sweep.py --sweep=configs/sweeps/siglip_batch.py --dir=workdirs/siglip_batch
"""

SAMPLES_SEEN = 32768
TERM = "objectives.image_text"
SIGLIP_INIT = {f"{TERM}.bias_init": -10.0, f"{TERM}.temperature_init": 2.302585}  # log(10)


def get_sweep() -> dict:
    return dict(
        config="configs/demo.py",
        grid={
            "loss": {
                "softmax": {f"{TERM}.loss": "softmax"},
                "sigmoid": {f"{TERM}.loss": "sigmoid", **SIGLIP_INIT},
            },
            "batch_size": [32, 128, 512, 2048, 4096],
            "samples_seen": [SAMPLES_SEEN],
        },
        fixed={
            # The demo's lr 2e-3 is tuned at batch 128; sqrt scaling from there.
            "optim.lr_scaling": "sqrt",
            "optim.lr_base_batch": 128,
            "log_every": 1_000_000,  # the loop also reports at the last step
            "ckpt_every": 1_000_000,  # and saves at the last step
            # Evaluate only at the end (the loop evaluates at the last step if every > 0).
            "evals.zeroshot.every": 1_000_000,
            "evals.retrieval.every": 1_000_000,
            "evals.knn.every": 0,
        },
        warmup_fraction=0.1,
    )
