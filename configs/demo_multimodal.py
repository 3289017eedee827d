r"""Five towers trained together on a CPU: image, text, audio, IMU and video.

  python -m mmjax.main --config=configs/demo_multimodal.py

The built-in multimodal synthetic source gives every example one class (colour x shape,
25 classes) seen through five modalities: a picture, a caption, a sound (pitch from the
colour, timbre and rhythm from the shape), a 6-axis motion trace (the shape's motion at the
colour's frequency) and a short video of the shape moving. Four terms align each
non-text modality with the caption (softmax), a fifth aligns IMU with video (a sensor and
what a camera saw, no text involved). At the end: zero-shot classification of image,
audio, IMU and video against text prompts the captions never use, and retrieval for
every trained pair.
"""

import ml_collections

from mmjax import config as mmconfig

AUDIO_RATE = 8000  # the synthetic sound: 1 s at 8 kHz


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, steps=800, batch=128)
    c = mmconfig.base()
    c.batch_size = arg.batch
    c.total_steps = arg.steps
    c.log_every = 100
    c.ckpt_every = 400
    c.keep_ckpts = 2
    c.model.embed_dim = 64
    towers = c.model.towers
    towers.image = mmconfig.tower("vit", variant="mu/8", pool="gap")
    towers.text = mmconfig.tower(
        "text", width=64, depth=2, num_heads=2, mlp_dim=256, vocab_size=1024, context_length=16
    )
    towers.audio = mmconfig.tower(
        "audio",
        variant="mu",
        pool="gap",
        sample_rate=AUDIO_RATE,
        n_fft=256,
        win_length=200,  # 25 ms windows
        hop_length=80,  # 10 ms hop: 101 frames
        n_mels=64,
        patch=(20, 16),  # 20 frames x 16 mel bins: 5 x 4 = 20 tokens
        time_masks=1,  # SpecAugment: one time and one frequency mask in training
        time_mask_width=10,
        freq_masks=1,
        freq_mask_width=8,
    )
    towers.imu = mmconfig.tower("timeseries", variant="mu", pool="gap", patch_length=16)
    # Per-frame 8 x 8 patches of 4 frames (every other one of the clip's 8): 4 x 16 = 64
    # tokens. Tubelets of 4 frames blur the moving shape (73.6% after 800 steps).
    towers.video = mmconfig.tower("video", variant="mu/8", tubelet=1, pool="gap")
    data = c.data.modalities
    data.image.size = 32
    data.audio = mmconfig.modality("audio", sample_rate=AUDIO_RATE, clip_seconds=1.0)
    data.imu = mmconfig.modality("timeseries", channels=6, length=128)
    data.video = mmconfig.modality("video", frames=4, stride=2, size=32)
    c.objectives.image_text = mmconfig.objective("softmax", ("image", "text"))
    for m in ("audio", "imu", "video"):
        c.objectives[f"{m}_text"] = mmconfig.objective("softmax", (m, "text"))
    c.objectives.imu_video = mmconfig.objective("softmax", ("imu", "video"), weight=0.5)
    c.optim.lr = 2e-3
    c.optim.weight_decay = 0.05
    c.schedule.warmup_steps = 100
    c.data.num_threads = 2
    c.data.synthetic.num_eval = 500
    c.evals = ml_collections.ConfigDict()
    every = arg.steps // 4
    for m in ("image", "audio", "imu", "video"):
        c.evals[f"zeroshot_{m}"] = dict(type="zeroshot", modality=m, every=every, batch_size=250)
    for m in ("image", "audio", "imu", "video"):
        c.evals[f"retrieval_{m}_text"] = dict(
            type="retrieval", modalities=(m, "text"), every=arg.steps, batch_size=250
        )
    c.evals.retrieval_imu_video = dict(
        type="retrieval", modalities=("imu", "video"), every=arg.steps, batch_size=250
    )
    return mmconfig.lock(c)
