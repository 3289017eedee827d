r"""Memory and time of the contrastive losses, every variant side by side.

  python tools/bench_loss.py                          # tables on stdout, bench_loss.json
  python tools/bench_loss.py --out=/tmp/b.json --time_max=8192 --widths=512

Memory is the per-device temporary memory of forward+backward (value_and_grad with
respect to both embeddings, scale and bias) as the compiler plans it
(`compile().memory_analysis().temp_size_in_bytes`): nothing is allocated, so every size
can be asked for. Arguments and outputs (the embeddings and their gradients) are not
counted. Time is wall time per call at the sizes that fit, measured with the variants
interleaved (so that a change of load on the machine hits all of them alike); the table
gives the fastest of the repeats, the JSON also the median.

Runs on fake CPU devices unless JAX already sees enough real ones.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "device_count" not in _FLAGS:  # 8 fake CPU devices
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from mmjax import errors  # noqa: E402
from mmjax.losses import LOSSES, get_loss, sharded_loss  # noqa: E402
from mmjax.parallel.mesh import BATCH_AXES, make_mesh  # noqa: E402

VARIANTS = "softmax,softmax_ring,sigmoid,sigmoid_ring,multi_positive,multi_positive_ring"
# Per-example inputs a loss may declare, and their dtype; the labels of the multi-positive
# losses are timed as random classes of 4 rows on average.
INPUT_DTYPES = {"x_labels": jnp.int32, "y_labels": jnp.int32}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_loss.json", help="where to write the JSON")
    p.add_argument("--variants", default=VARIANTS, help="comma-separated loss names")
    p.add_argument("--devices", type=int, default=8, help="devices for the batch tables")
    p.add_argument("--min_log2", type=int, default=12, help="smallest global batch, log2")
    p.add_argument("--max_log2", type=int, default=20, help="largest global batch, log2")
    p.add_argument("--widths", default="512,768", help="embedding widths for memory")
    p.add_argument("--time_max", type=int, default=16384, help="largest global batch timed")
    p.add_argument("--time_widths", default="512", help="embedding widths timed")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant and size")
    p.add_argument("--scaling_local", default="2048,16384", help="local batches, 2/4/8 dev")
    p.add_argument("--tile_size", type=int, default=None, help="ring losses' tile_size")
    p.add_argument("--chunk_size", type=int, default=None, help="ring losses' chunk_size")
    return p.parse_args()


def loss_and_grads(name: str, mesh: jax.sharding.Mesh, options: dict):
    """jit(value_and_grad) of a loss over the mesh, wrt image, text, scale and bias."""
    loss = sharded_loss(get_loss(name, options), mesh)
    vg = jax.value_and_grad(lambda *a, **kw: loss(*a, **kw), argnums=(0, 1, 2, 3), has_aux=True)
    return jax.jit(vg)


def input_names(name: str) -> tuple[str, ...]:
    """The per-example inputs loss `name` declares (all must be in INPUT_DTYPES)."""
    names = get_loss(name).inputs
    if unknown := set(names) - set(INPUT_DTYPES):
        raise SystemExit(f"{name}: no bench input for {sorted(unknown)}")
    return names


def mesh_of(n_dev: int) -> jax.sharding.Mesh:
    config = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return make_mesh(config, jax.devices()[:n_dev])


def temp_bytes(name: str, batch: int, width: int, n_dev: int, options: dict) -> int:
    mesh = mesh_of(n_dev)
    emb = jax.ShapeDtypeStruct(
        (batch, width), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    )
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    inputs = {
        k: jax.ShapeDtypeStruct((batch,), INPUT_DTYPES[k], sharding=emb.sharding)
        for k in input_names(name)
    }
    lowered = loss_and_grads(name, mesh, options).lower(emb, emb, scalar, scalar, **inputs)
    return int(lowered.compile().memory_analysis().temp_size_in_bytes)


def time_calls(names: list[str], batch: int, width: int, n_dev: int, args) -> dict:
    """Seconds per call of each variant, interleaved: {name: [seconds per repeat]}."""
    mesh = mesh_of(n_dev)
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    rng = np.random.default_rng(0)

    def embeddings() -> jax.Array:
        x = rng.normal(size=(batch, width)).astype(np.float32)
        return jax.device_put(x / np.linalg.norm(x, axis=1, keepdims=True), sharding)

    inputs = (embeddings(), embeddings(), jnp.float32(10.0), jnp.float32(-10.0))
    labels = jax.device_put(
        rng.integers(0, max(batch // 4, 1), size=batch, dtype=np.int32), sharding
    )
    fns = {name: loss_and_grads(name, mesh, options(args)) for name in names}
    extra = {name: {k: labels for k in input_names(name)} for name in names}
    for name, fn in fns.items():
        jax.block_until_ready(fn(*inputs, **extra[name]))  # compile and warm up
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*inputs, **extra[name]))
            times[name].append(time.perf_counter() - start)
    return times


def options(args) -> dict:
    return {k: v for k, v in (("tile_size", args.tile_size), ("chunk_size", args.chunk_size)) if v}


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"\n{title}\n", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    names = args.variants.split(",")
    for name in names:
        if name not in LOSSES:
            raise errors.UsageError(
                f"--variants: {errors.unknown_name('loss', name, LOSSES.names())}"
            )
    widths = [int(w) for w in args.widths.split(",")]
    batches = [2**k for k in range(args.min_log2, args.max_log2 + 1)]
    n_dev = args.devices
    if jax.device_count() < n_dev:
        raise errors.UsageError(
            f"--devices={n_dev}: JAX sees {jax.device_count()} devices; pass fewer."
        )
    result = {
        "meta": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": n_dev,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_at_start": os.getloadavg(),
            "options": options(args),
            "dtype": "float32",
        },
        "memory": [],
        "time": [],
        "scaling": [],
    }
    started = time.time()

    for width in widths:
        rows = []
        for batch in batches:
            row = [f"{batch:,}", f"{batch // n_dev:,}"]
            for name in names:
                temp = temp_bytes(name, batch, width, n_dev, options(args))
                result["memory"].append(
                    dict(variant=name, global_batch=batch, width=width, devices=n_dev, temp=temp)
                )
                row.append(human(temp))
            rows.append(row)
            print(f"  memory {width=} {batch=} done ({time.time() - started:.0f} s)", flush=True)
        print(
            table(
                f"Temp memory per device, forward+backward, width {width}, {n_dev} devices:",
                ["global batch", "local batch", *names],
                rows,
            ),
            flush=True,
        )

    for width in [int(w) for w in args.time_widths.split(",") if w]:
        rows = []
        for batch in [b for b in batches if b <= args.time_max]:
            times = time_calls(names, batch, width, n_dev, args)
            base = {n: min(times[n]) for n in names}
            row = [f"{batch:,}"]
            for name in names:
                result["time"].append(
                    dict(
                        variant=name,
                        global_batch=batch,
                        width=width,
                        devices=n_dev,
                        seconds_min=min(times[name]),
                        seconds_median=float(np.median(times[name])),
                        seconds=times[name],
                    )
                )
                ref = name.removesuffix("_ring")
                ratio = f" ({base[name] / base[ref]:.2f}x)" if ref != name and ref in base else ""
                row.append(f"{base[name]:.2f} s{ratio}")
            rows.append(row)
            print(f"  time {width=} {batch=} done ({time.time() - started:.0f} s)", flush=True)
        if not rows:
            continue
        print(
            table(
                f"Seconds per forward+backward call, width {width}, {n_dev} devices "
                "(fastest of the repeats; ring / all-gather in brackets):",
                ["global batch", *names],
                rows,
            ),
            flush=True,
        )

    for local in [int(b) for b in args.scaling_local.split(",") if b]:
        rows = []
        for n in (2, 4, 8):
            row = [str(n), f"{local * n:,}"]
            for name in names:
                temp = temp_bytes(name, local * n, widths[0], n, options(args))
                result["scaling"].append(
                    dict(
                        variant=name,
                        local_batch=local,
                        global_batch=local * n,
                        width=widths[0],
                        devices=n,
                        temp=temp,
                    )
                )
                row.append(human(temp))
            rows.append(row)
        print(
            table(
                f"Temp memory per device at local batch {local:,}, width {widths[0]}:",
                ["devices", "global batch", *names],
                rows,
            ),
            flush=True,
        )

    result["meta"]["seconds_total"] = time.time() - started
    result["meta"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    errors.run(main)
