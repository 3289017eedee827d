"""Configs: arg parsing, locked fields, validation messages, mesh shapes, recipes."""

import ml_collections
import pytest

from mmjax import config as config_lib
from mmjax.parallel.mesh import mesh_shape


def load(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return config_lib.load_config(f"{path}:{arg}" if arg else path)


def test_parse_arg_casts_and_rejects_unknown_keys():
    arg = config_lib.parse_arg("runlocal,res=64", runlocal=False, res=224)
    assert arg.runlocal is True and arg.res == 64
    with pytest.raises(ValueError, match="Unknown config arg 'rez'"):
        config_lib.parse_arg("rez=64", res=224)


def test_clip_vitb_recipe_is_the_papers():
    c = load("configs/clip_vitb.py")
    assert c.batch_size == 32768 and c.optim.lr == 5e-4
    assert (c.optim.b1, c.optim.b2, c.optim.eps, c.optim.weight_decay) == (0.9, 0.98, 1e-6, 0.2)
    assert c.schedule.warmup_steps == 10_000 and c.schedule.name == "warmup_cosine"
    local = load("configs/clip_vitb.py", "runlocal")
    assert local.model.towers.image.variant == "B/16" and local.batch_size < 100


def test_recipes_are_locked_against_typos():
    c = load("configs/demo.py")
    with pytest.raises(AttributeError):
        c.optim.learning_rate = 1.0
    with pytest.raises(TypeError):
        c.batch_size = "big"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 100, "not divisible by the 8 devices"),
        ("total_steps", 0, "total_steps: must be positive"),
        ("schedule.warmup_steps", 5000, "exceeds total_steps"),
    ],
)
def test_check_names_the_field_to_change(field, value, message):
    c = load("configs/demo.py")
    parent, _, leaf = field.rpartition(".")
    (c[parent] if parent else c)[leaf] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.check(c, num_devices=8, num_processes=1)


def test_mesh_shape_fills_the_minus_one_axis():
    m = ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=1))
    assert mesh_shape(m, 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="does not divide 8 devices"):
        mesh_shape(ml_collections.ConfigDict(dict(data=-1, fsdp=3, tensor=1)), 8)
    with pytest.raises(ValueError, match="uses 4 devices but 8"):
        mesh_shape(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=1)), 8)


def test_siglip_recipe_derives_from_clip():
    c = load("configs/siglip_vitb.py")
    term = c.objectives.image_text
    assert term.loss == "sigmoid" and term.bias_init == -10.0
    assert abs(term.temperature_init - 2.302585) < 1e-6
    assert c.batch_size == 32768 and c.schedule.warmup_steps == 5000
    local = load("configs/siglip_vitb.py", "runlocal")
    assert local.batch_size == 16 and local.objectives.image_text.loss == "sigmoid"
    with pytest.raises(AttributeError):  # still locked against typos
        local.optim.learning_rate = 1.0
