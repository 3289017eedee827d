"""Everything about a run's config that can be checked before anything is built.

`check(config, num_devices, num_processes)` runs every registered check and raises one
`ConfigError` listing every problem found, each naming its field, the bad value and what
to do: unknown registry names (with the known ones), fields a tower or modality type
does not have, impossible combinations (an objective over a modality no tower provides,
a batch that does not split, a tower whose data has the wrong rank), values out of range,
and data paths that match nothing or cannot be read.

The checks lean on the registries, so a tower, loss, modality, source, evaluator or
schedule added later is checked without an edit here: its name against its registry,
its fields against its registered defaults, its construction by building it (building a
tower or a reader is cheap: nothing is traced or compiled). A new kind of input adds one
function with `@register` (in the module of its kind, below).
"""

# Checks run in the order their modules are imported here (the order of the messages;
# a later check may lean on what an earlier one has checked).
# isort: off
from mmjax.validate import ranges, model, data  # noqa: F401
from mmjax.validate import objectives, training, evaluators, distributed  # noqa: F401

# isort: on
from mmjax.validate.core import (
    CHECKS,
    DEEP_CHECKS,
    Context,
    check,
    format_problems,
    problems,
    register,
    register_deep,
)
from mmjax.validate.distributed import check_distributed
from mmjax.validate.workdir import WorkdirError, check_workdir

__all__ = [
    "CHECKS",
    "DEEP_CHECKS",
    "Context",
    "WorkdirError",
    "check",
    "check_distributed",
    "check_workdir",
    "format_problems",
    "problems",
    "register",
    "register_deep",
]
