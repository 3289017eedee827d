r"""The demo CLIP with one image-text objective swapped: the runs of docs/objectives.md.

  python -m mmjax.main --config=configs/demo_objectives.py:objective=maskcon
  python tools/study_objectives.py --dir=workdirs/objectives   # every run, table and plots

`objective` (the image-text term's loss):
  clip        softmax InfoNCE, one positive per row (the demo as it is)
  supcon      SupCon over the coarse label (the shape, 5 classes): every pair of the same
              shape is a positive (`multi_positive`)
  maskcon     MaskCon: soft targets from this step's embeddings, masked to the same coarse
              label, mixed with the one-hot target (`soft_targets_masked`)
  matryoshka  softmax over nested prefixes (8, 16, 32, 64) of the 64-d embedding
  filip       FILIP's token-wise late interaction
`dim`: the joint embedding size (the Matryoshka comparison trains `clip` at 8, 16, 32).

Every run keeps the demo's model, data, optimiser and steps, and evaluates zero-shot on the
25 fine classes (colour and shape) every 200 steps; kNN (fine classes, backbone features)
and retrieval at the end, zero-shot and retrieval also at every prefix (8, 16, 32) of the
embedding; FILIP runs also retrieve by token-wise similarity.
"""

import importlib.util
import pathlib

import ml_collections

from mmjax import config as mmconfig

MATRYOSHKA_DIMS = (8, 16, 32, 64)
LOSSES = dict(
    clip=dict(loss="softmax"),
    supcon=dict(loss="multi_positive", labels="coarse"),
    maskcon=dict(loss="soft_targets_masked", labels="coarse"),
    matryoshka=dict(loss="matryoshka", dims=MATRYOSHKA_DIMS),
    filip=dict(loss="filip"),
)


def _demo(arg: str):
    """configs/demo.py's config (loaded by path: configs/ is not a package)."""
    path = pathlib.Path(__file__).with_name("demo.py")
    spec = importlib.util.spec_from_file_location("demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg: str | None = None):
    arg = mmconfig.parse_arg(arg, objective="clip", dim=64, steps=1000)
    if arg.objective not in LOSSES:
        raise ValueError(f"objective={arg.objective!r}: one of {', '.join(LOSSES)}.")
    c = _demo(f"steps={arg.steps}")
    with c.unlocked():
        c.model.embed_dim = arg.dim
        c.schedule.warmup_steps = min(c.schedule.warmup_steps, arg.steps // 10)
        c.data.modalities.coarse = mmconfig.modality("label", key="shape_label")
        c.objectives.image_text = mmconfig.objective(
            modalities=("image", "text"), **LOSSES[arg.objective]
        )
        # Every run reports its prefixes too: the Matryoshka model against a truncated CLIP.
        dims = tuple(d for d in MATRYOSHKA_DIMS if d < arg.dim)
        c.evals.zeroshot.dims = dims
        c.evals.retrieval.dims = dims
        if arg.objective == "filip":
            c.evals.retrieval_tokens = ml_collections.ConfigDict(
                dict(c.evals.retrieval.to_dict(), similarity="tokens", dims=())
            )
    return mmconfig.lock(c)
