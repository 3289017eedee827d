"""Installs mmjax and its console entry points."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#") and not line.startswith(("pytest", "ruff"))
]

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
        "test": ["pytest>=8,<10", "ruff>=0.6"],
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
