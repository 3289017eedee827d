"""Evaluation datasets by name: image folders, TFDS, shipped names and templates, configs."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax import evals
from mmjax import state as state_lib
from mmjax.evals import classnames, templates
from mmjax.evals.datasets import DATASET_DEFAULTS, build_dataset
from mmjax.parallel import sharding
from mmjax.parallel.mesh import make_mesh
from tests.helpers import tiny_config
from tests.test_evals_devices import random_params


def entry(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(DATASET_DEFAULTS, type="zeroshot", **fields))


def stripes(height: int, width: int) -> np.ndarray:
    """Red, green, blue thirds along the longer side: a centre crop is all green."""
    image = np.zeros((height, width, 3), np.uint8)
    n = max(height, width)
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        part = slice(i * n // 3, (i + 1) * n // 3)
        if width >= height:
            image[:, part] = colour
        else:
            image[part] = colour
    return image


@pytest.fixture
def folder(tmp_path):
    for split in ("train", "val"):
        for name, shape in (("golden_retriever", (24, 72)), ("cat", (72, 24))):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(3 if split == "train" else 2):
                Image.fromarray(stripes(*shape)).save(d / f"{i}.png")
            (d / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_labels_names_and_centre_crop(folder):
    ds = build_dataset(entry(dataset="imagefolder", path=str(folder), split="val"), tiny_config())
    assert ds.class_names == ("cat", "golden retriever")
    assert len(ds) == 4 and [int(ds[i]["label"]) for i in range(4)] == [0, 0, 1, 1]
    for i in range(4):
        image = ds[i]["image"]
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        # The middle third survives the crop: green, away from the resampled edges.
        np.testing.assert_allclose(image[2:-2, 2:-2].mean((0, 1)), [0, 255, 0], atol=2)
    train = build_dataset(entry(dataset="imagefolder", path=str(folder)), tiny_config(), "train")
    assert len(train) == 6


def test_zero_shot_runs_on_an_image_folder(folder):
    config = tiny_config()
    with config.unlocked():
        config.evals.zeroshot = dict(
            type="zeroshot", dataset="imagefolder", path=str(folder), split="val", batch_size=8
        )
    mesh = make_mesh(config.mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state_lib.build(config, mesh)
        model, abstract = built.model, built.abstract
        params = random_params(abstract.params, mesh)
        [zs] = evals.build_evaluators(evals.EvalContext(model, mesh, config))
        results = zs.evaluator.run(params)
    assert results["top1"] in (0, 0.25, 0.5, 0.75, 1)  # four images, each counted once
    assert results["top5"] == 1.0  # two classes: the top five hold both


def test_tfds_source_by_name_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = tiny_config()
    with tfds.testing.mock_data(num_examples=5):
        ds = build_dataset(entry(dataset="cifar10"), config)
        assert ds.split == "test" and ds.templates == "cifar10" and len(ds) == 5
        assert len(ds.class_names) == 10
        example = ds[4]
        assert example["image"].shape == (16, 16, 3) and example["image"].dtype == np.uint8
        assert 0 <= int(example["label"]) < 10
        imagenet = build_dataset(entry(dataset="imagenet2012"), config)
        assert imagenet.split == "validation" and imagenet.class_names[:2] == ("tench", "goldfish")
        assert imagenet[0]["image"].shape == (16, 16, 3)  # from a non-square mock image
        other = build_dataset(entry(dataset="tfds:cifar100", split="train"), config)
        assert other.split == "train" and other.templates == "cifar100"


def test_clip_prompt_lists_and_imagenet_names():
    assert len(templates.IMAGENET) == 80 and len(set(templates.IMAGENET)) == 80
    assert set(templates.IMAGENET_7) <= set(templates.IMAGENET)
    assert len(templates.CIFAR) == 18
    names = classnames.class_list("imagenet")
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert names[657] == names[744] == "missile"  # as in CLIP's list
    with pytest.raises(ValueError, match="imagenet7"):
        templates.get_templates("imagenet8")


def test_unknown_entry_field_fails_with_the_known_ones():
    config = tiny_config()
    with config.unlocked():
        config.evals.knn = dict(type="knn", temprature=0.1)
    context = evals.EvalContext(None, make_mesh(config.mesh), config)
    with pytest.raises(ValueError, match=r"temprature.*temperature"):
        evals.build_evaluators(context)


def test_labelled_only_dataset_refused_for_retrieval(folder):
    config = tiny_config()
    with config.unlocked():
        config.evals.retrieval = dict(type="retrieval", dataset="imagefolder", path=str(folder))
    context = evals.EvalContext(None, make_mesh(config.mesh), config)
    with pytest.raises(ValueError, match="no captions"):
        evals.build_evaluators(context)
