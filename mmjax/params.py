"""Parameters by name: "/"-joined paths, regex selections, and the frozen/trainable split.

A parameter's name is its path in the tree, "/"-joined: `image/encoder/blocks/attn/qkv/
kernel`, `text/stem/token_embed/embedding`, `objectives/image_text/t`. Everything that
treats parameters differently (frozen parts, learning-rate and weight-decay multipliers,
layer-wise decay) selects them by regexes over these names (`re.search`), so a config
says what it means without knowing the tree's layout in code.

Frozen parameters are split off the tree rather than masked inside it: the optimizer and
the EMA only ever see the trainable tree, in which frozen leaves are `optax.MaskedNode`s
(empty subtrees), so they hold no moments and no average and cost no memory.
"""

import re
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

Mask = Any  # a tree of Python bools, shaped like the parameters


def path_name(path: tuple[Any, ...]) -> str:
    """A tree path -> "image/encoder/blocks/attn/qkv/kernel" (dict keys only: the `.value`
    of Flax's partitioning boxes and other attribute steps are skipped)."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.Partitioned)


def map_with_names(fn: Callable[[str, Any], Any], tree: Any) -> Any:
    """`fn(name, leaf)` on every parameter; boxed (still partitioned) leaves count as one."""
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_name(p), x), tree, is_leaf=_is_box)


def names(tree: Any) -> list[str]:
    return jax.tree.leaves(map_with_names(lambda n, _: n, tree))


def matches(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate: does a name match any of the regexes (searched, not anchored)?"""
    compiled = [re.compile(p) for p in patterns]
    return lambda name: any(c.search(name) for c in compiled)


def first_match(rules: Iterable[tuple[str, Any]], name: str, default: Any) -> Any:
    """The value of the first (regex, value) rule that matches `name`, else `default`."""
    for pattern, value in rules:
        if re.search(pattern, name):
            return value
    return default


def frozen_patterns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Regexes of the parameters that do not train: `optim.freeze`, plus every tower with
    `lock=True` (LiT: Zhai et al. 2022)."""
    locked = [
        f"^{re.escape(m)}/"
        for m, c in config.model.towers.items()
        if c.get("lock", False) and not c.share
    ]
    return tuple(config.optim.get("freeze", ())) + tuple(locked)


def frozen_mask(tree: Any, patterns: Iterable[str]) -> Mask:
    """True for every leaf whose name matches one of `patterns`."""
    is_frozen = matches(patterns)
    return map_with_names(lambda n, _: is_frozen(n), tree)


def split(tree: Any, mask: Mask) -> tuple[Any, Any]:
    """(trainable, frozen): two trees shaped like `tree`, each with `optax.MaskedNode()`
    where the other holds the leaf. `mask` is True for frozen leaves."""
    masked = optax.MaskedNode()
    trainable = jax.tree.map(lambda x, m: masked if m else x, tree, mask, is_leaf=_is_box)
    frozen = jax.tree.map(lambda x, m: x if m else masked, tree, mask, is_leaf=_is_box)
    return trainable, frozen


def merge(trainable: Any, frozen: Any) -> Any:
    """The inverse of `split`."""
    is_masked = lambda x: isinstance(x, optax.MaskedNode) or _is_box(x)
    return jax.tree.map(
        lambda a, b: b if isinstance(a, optax.MaskedNode) else a,
        trainable,
        frozen,
        is_leaf=is_masked,
    )


def trainable(tree: Any, patterns: Iterable[str]) -> Any:
    """The trainable part of `tree` (frozen leaves as `MaskedNode`s)."""
    patterns = tuple(patterns)
    if not patterns:
        return tree
    return split(tree, frozen_mask(tree, patterns))[0]


def select(tree: Any, keep: Callable[[str], bool]) -> dict:
    """The nested dicts of `tree` holding only the leaves whose name `keep` accepts (empty
    dicts dropped): a partial-restore target."""

    def prune(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node if keep(prefix) else None
        kept = {}
        for k, v in node.items():
            child = prune(v, f"{prefix}/{k}" if prefix else str(k))
            if child is not None and child != {}:
                kept[k] = child
        return kept

    return prune(dict(tree), "")


def replace(tree: Any, subtree: dict) -> Any:
    """`tree` with every leaf that `subtree` (nested dicts, as from `select`) holds."""
    if not isinstance(subtree, dict):
        return subtree
    out = dict(tree)
    for k, v in subtree.items():
        out[k] = replace(tree[k], v)
    return out
