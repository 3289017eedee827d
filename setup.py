"""Installs mmjax and its console entry points."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent
# requirements.txt lists the runtime dependencies, then, after "# Tests and lint", the
# test-only ones: only the first part is installed with the package.
_RUNTIME = (HERE / "requirements.txt").read_text().split("# Tests and lint")[0]
REQUIREMENTS = [
    line.split("#")[0].strip() for line in _RUNTIME.splitlines() if line.split("#")[0].strip()
]
_TESTS = (HERE / "requirements.txt").read_text().split("# Tests and lint")[1]

setuptools.setup(
    name="mmjax",
    version="0.1.0",
    description="Contrastive multimodal pretraining (CLIP, SigLIP) in JAX/Flax.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["mmjax", "mmjax.*"]),
    package_data={"mmjax": ["**/*.txt.gz", "**/*.json"]},
    install_requires=REQUIREMENTS,
    extras_require={
        "test": [
            x.split("#")[0].strip() for x in _TESTS.splitlines()[1:] if x.split("#")[0].strip()
        ],
        # open_clip checkpoints (tools/convert_open_clip.py, tests/test_open_clip.py). torch
        # and torchvision are pinned as a pair: an open range pulls the newest torch, a
        # multi-GB CUDA build. Install torch==2.13.0 from a CPU index first for CPU wheels.
        "interop": [
            "torch==2.13.0",
            "torchvision==0.28.0",
            "open_clip_torch>=3.0,<4",
            "safetensors>=0.4",
        ],
    },
    entry_points={"console_scripts": ["mmjax=mmjax.main:run"]},
)
