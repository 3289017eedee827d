"""Modality readers and sources: registered types, fields, and data paths that match and
read."""

from collections.abc import Iterator

import ml_collections

from mmjax.config import Problem
from mmjax.errors import unknown_name
from mmjax.validate.core import Context, error_text, register
from mmjax.validate.model import built_towers, example_rank, field_problems, tower_types


def built_readers(config: ml_collections.ConfigDict) -> tuple[dict, list[Problem]]:
    """({modality: reader} of the data modalities that build, problems of the others)."""
    from mmjax.data import modalities

    out, found = {}, []
    for name, c in config.data.modalities.items():
        field = f"data.modalities.{name}"
        if not isinstance(c, ml_collections.ConfigDict) or "type" not in c:
            found.append(Problem(field, "is not a modality entry: use mmconfig.modality(...)."))
            continue
        if c.type not in modalities.MODALITY_TYPES:
            known = modalities.MODALITY_TYPES.names()
            found.append(Problem(f"{field}.type", unknown_name("modality type", c.type, known)))
            continue
        kind = modalities.MODALITY_TYPES.get(c.type)
        messages = field_problems("modality type", c.type, c, kind.defaults)
        if not modalities.keys_of(c.key):
            messages.append("key is empty: name the record field(s) to read, e.g. 'jpg;png'.")
        if messages:
            found += [Problem(field, m) for m in messages]
            continue
        try:
            out[name] = kind.build(name, c, config, True)
        except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
            found.append(Problem(field, error_text(e)))
    return out, found


@register
def data(ctx: Context) -> Iterator[Problem]:
    """Modality types, fields and readers (tokenizers included); the source and its files."""
    from mmjax.data import sources

    config = ctx.config
    readers, found = built_readers(config)
    yield from found
    if not config.data.modalities:
        yield Problem("data.modalities", "is empty: the batch would hold nothing.")
    name = config.data.source
    if name not in sources.SOURCES:
        yield Problem("data.source", unknown_name("data source", name, sources.SOURCES.names()))
        return
    for message in sources.check_source(config.data, ctx.num_processes):
        yield Problem("data.path", message)
    if name == "synthetic" or not config.data.path:
        try:  # the synthetic source makes what the modalities' keys name, at their sizes
            sources.synthetic_shapes(config.data)
        except ValueError as e:
            yield Problem("data.modalities", error_text(e))
    # The towers read what the data holds: the same modalities, at their rank.
    towers, _ = built_towers(config)
    owner = tower_types(config)
    for m in config.model.towers:
        if m not in config.data.modalities:
            continue
        rank = example_rank(towers.get(owner[m]))
        reader = readers.get(m)
        if rank is not None and reader is not None and len(reader.shape) < rank:
            yield Problem(
                f"data.modalities.{m}",
                f"type {config.data.modalities[m].type!r} gives examples of shape"
                f" {list(reader.shape)}, but tower {m!r} ({config.model.towers[owner[m]].type})"
                f" takes examples of rank {rank}: make the data modality and the tower the"
                " same kind.",
            )
