"""The files of a saved step, read without Orbax: their checksums (written before the
step is committed, checked before it is restored), whether its state fits a model, and
which steps in a folder are committed or were interrupted (for the loop and for tools).
"""

import json
from typing import Any

import jax
import orbax.checkpoint as ocp

from mmjax import storage

CHECKSUMS = "mmjax_checksums.json"
# Files of the step itself that Orbax writes or rewrites when it commits, after the
# checksums: its metadata (commit time) and, on gs://, the commit marker.
COMMITTED_LATER = ("_CHECKPOINT_METADATA", "commit_success.txt")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's in-progress suffix on filesystems with rename
COMMIT_FILE = "commit_success.txt"  # Orbax's commit marker on gs://


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params.image.cls": shape} for a state or an Orbax metadata tree alike."""

    def name(entry: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {".".join(map(name, path)): tuple(x.shape) for path, x in leaves if hasattr(x, "shape")}


def misfit(step_dir: str, abstract_state: Any, limit: int = 3) -> list[str]:
    """What in a checkpoint's "state" does not fit `abstract_state`: arrays of another
    shape, or missing (another model, another optimizer). [] if it all fits."""
    from etils import epath

    try:
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state")
    except Exception as error:
        return [f"state/_METADATA: unreadable ({type(error).__name__}: {str(error)[:200]})"]
    have, want = _flat_shapes(saved), _flat_shapes(abstract_state)
    order = lambda keys: sorted(keys, key=lambda k: (not k.startswith("params."), k))
    problems = [
        f"state {k}: shape {have[k]} in the checkpoint, {want[k]} in this run"
        for k in order(set(have) & set(want))
        if have[k] != want[k]
    ]
    problems += [f"state {k}: not in the checkpoint" for k in order(set(want) - set(have))]
    return problems[:limit]


def write_checksums(step_dir: str) -> None:
    """Records the size and checksum of every file below `step_dir` (on gs://, the
    CRC32C GCS keeps of each object: nothing is read back)."""
    sizes = storage.files_under(step_dir)
    for name in (CHECKSUMS, *COMMITTED_LATER):
        sizes.pop(name, None)
    sums = storage.checksums_under(step_dir, set(sizes))
    files = {name: {"size": size, "checksum": sums[name]} for name, size in sorted(sizes.items())}
    storage.write_text(storage.join(step_dir, CHECKSUMS), json.dumps({"files": files}))


def check_files(step_dir: str, share: int = 0, shares: int = 1) -> list[str]:
    """Problems ("state/d/1a2b: truncated ...") with this process's share of the files
    recorded in `step_dir`'s checksums; [] when intact or when it has no checksums."""
    path = storage.join(step_dir, CHECKSUMS)
    if not storage.exists(path):
        return []
    try:
        recorded = json.loads(storage.read_text(path))["files"]
    except (ValueError, KeyError) as error:
        return [f"{CHECKSUMS}: unreadable ({error})"]
    present = storage.files_under(step_dir)
    problems, same_size = [], set()
    for name in sorted(recorded)[share::shares]:
        size = recorded[name]["size"]
        if name not in present:
            problems.append(f"{name}: missing")
        elif present[name] != size:
            what = "truncated" if present[name] < size else "size changed"
            problems.append(f"{name}: {what} ({present[name]} bytes, {size} when written)")
        else:
            same_size.add(name)
    sums = storage.checksums_under(step_dir, same_size)
    for name in sorted(same_size):
        want = recorded[name]["checksum"]
        if sums[name] != want:
            algorithm = want.split(":")[0].upper()
            problems.append(f"{name}: content differs from when it was written ({algorithm})")
    return problems


def incomplete_saves(directory: str) -> list[str]:
    """Interrupted saves in `directory`: Orbax's temporary folders, and on gs:// step
    folders without their commit file. Orbax ignores them and cleans them up."""
    names = storage.listdir(directory)
    found = [n for n in names if TMP_SUFFIX in n]
    if storage.protocol(directory) == "gs":
        found += [
            n
            for n in names
            if n.isdigit() and not storage.exists(storage.join(directory, n, COMMIT_FILE))
        ]
    return [storage.join(directory, n) for n in sorted(found)]


def finished_steps(directory: str) -> list[int]:
    """Committed steps in `directory`, without opening an Orbax manager (for tools)."""
    incomplete = set(incomplete_saves(directory))
    return sorted(
        int(n)
        for n in storage.listdir(directory)
        if n.isdigit() and storage.join(directory, n) not in incomplete
    )
