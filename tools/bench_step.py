r"""Train-step benchmark: step time, samples/s per device, TFLOP/s, MFU, memory, data wait.

  python tools/bench_step.py --config=configs/clip_vitb.py:runlocal --steps=10
  python tools/bench_step.py --config=configs/clip_vitb.py --set batch_size=16 \
      --set model.towers.image.variant=B/32 --set data.modalities.image.size=224 \
      --set model.dtype=float32 --open_clip --rounds=3          # side by side with open_clip
  python tools/bench_step.py --config=configs/clip_vitb.py --memory --streamed --devices=8 \
      --set batch_size=16777216 --set accum_steps=1024 \
      --set objectives.image_text.loss=softmax_ring --set model.remat=full

On whatever devices are present: compiles the config's train step, warms up, times
`--steps` steps (each waited for), and prints and writes as JSON the median step time,
samples/s per device, model TFLOP/s per device (sweeps/flops.py), MFU against the chip's
peak (parallel/chips.py; omitted for an unknown chip), peak device memory (the device's
own count where it reports one, else the compiled step's) and the fraction of the time
spent waiting for data (input from the config's pipeline through the device prefetcher;
`--fixed_batch` times one device-resident batch instead).

`--open_clip` also times open_clip's train step on the same model (converted with
interop/open_clip), batch and precision, in the same process, alternating `--rounds`
blocks of steps so that a change of load hits both alike; the ratio is mmjax / open_clip.
Needs torch and open_clip_torch (not in requirements).

`--memory` compiles without running and reports the compiled memory per device; with
`--streamed`, of each part of the streamed accumulation step (train/streamed.py), so a
global batch far beyond the devices (and this machine) can be sized; `--devices=N` fakes
N CPU devices.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/clip_vitb.py:runlocal")
    p.add_argument("--set", action="append", default=[], help="key=value override (repeat)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="alternated rounds (--open_clip)")
    p.add_argument("--open_clip", action="store_true")
    p.add_argument("--fixed_batch", action="store_true", help="no input pipeline")
    p.add_argument("--memory", action="store_true", help="compile only; report memory")
    p.add_argument("--streamed", action="store_true", help="the streamed accumulation step")
    p.add_argument("--devices", type=int, default=0, help="fake this many CPU devices")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (XLA and torch)")
    p.add_argument("--xla_flags", default="", help="extra XLA_FLAGS")
    p.add_argument("--out", default="bench_step.json")
    return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # before JAX is imported: device count and threads are XLA flags
    flags = [os.environ.get("XLA_FLAGS", ""), ARGS.xla_flags]
    if ARGS.devices:
        flags.append(f"--xla_force_host_platform_device_count={ARGS.devices}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if ARGS.threads:
        flags.append(
            f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={ARGS.threads}"
        )
    os.environ["XLA_FLAGS"] = " ".join(f for f in flags if f)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config as config_lib  # noqa: E402
from mmjax import errors, losses, state, validate  # noqa: E402
from mmjax.data import modalities, pipeline  # noqa: E402
from mmjax.parallel import chips, sharding  # noqa: E402
from mmjax.parallel import mesh as mesh_lib  # noqa: E402
from mmjax.sweeps import flops  # noqa: E402
from mmjax.train import loop, prefetch, streamed  # noqa: E402


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def load(config_flag: str, sets: list[str]):
    """The config with its `--set`s, checked as `python -m mmjax.main` checks it."""
    bad = [s for s in sets if "=" not in s]
    if bad:
        raise errors.UsageError(f"--set {bad[0]}: give key=value, e.g. --set batch_size=16.")
    overrides = dict(s.split("=", 1) for s in sets)
    config = config_lib.load_config(config_flag, {k: parse_value(v) for k, v in overrides.items()})
    validate.check(config, jax.device_count(), jax.process_count())
    return config


def random_batch(config, rows: int, seed: int = 0) -> dict:
    """Host arrays of every modality: uint8 pixels, token ids ending in the EOT id."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in modalities.example_specs(config).items():
        if np.issubdtype(dtype, np.integer) and len(shape) == 1:  # token ids
            vocab = config.model.towers[name].get("vocab_size", 1000)
            ids = rng.integers(1, vocab - 1, (rows, *shape)).astype(dtype)
            ids[:, -1] = vocab - 1
            out[name] = ids
        elif np.issubdtype(dtype, np.integer):
            out[name] = rng.integers(0, 256, (rows, *shape)).astype(dtype)
        else:
            out[name] = rng.normal(size=(rows, *shape)).astype(dtype)
    return out


class MmjaxStep:
    """The config's compiled train step with its state and input, timed per step."""

    def __init__(self, config, fixed_batch: bool):
        self.config = config
        self.mesh = mesh_lib.make_mesh(config.mesh)
        config_lib.check(config, jax.device_count(), jax.process_count())
        self._ctx = [
            jax.set_mesh(self.mesh),
            nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)),
        ]
        for c in self._ctx:
            c.__enter__()
        built = state.build(config, self.mesh)
        objective = losses.Objective(config.objectives, self.mesh)
        t = time.perf_counter()
        self.compiled = loop.compile_step(config, self.mesh, built, objective)
        self.compile_s = time.perf_counter() - t
        self.state = state.init_state(built.init_fn, jax.random.key(0), built.shardings)
        to_device = lambda b: sharding.global_batch(b, self.mesh)
        if fixed_batch:
            fixed = to_device(random_batch(config, config.batch_size))
            self.batches = iter(lambda: fixed, None)
            self.wait = lambda: 0.0
        else:
            data = pipeline.train_iterator(config, jax.process_index(), jax.process_count())
            self.batches = prefetch.prefetch(data, to_device, config.data.device_prefetch)
            self.wait = lambda: self.batches.wait_s

    def run(self, steps: int) -> tuple[list[float], float]:
        """(seconds per step, seconds waiting for data in all)."""
        times, waited = [], 0.0
        for _ in range(steps):
            t = time.perf_counter()
            batch = next(self.batches)
            waited += self.wait()
            self.state, metrics = self.compiled(self.state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        return times, waited

    def memory(self) -> dict:
        stats = jax.local_devices()[0].memory_stats() or {}
        a = self.compiled.memory_analysis()
        compiled = a.argument_size_in_bytes + a.output_size_in_bytes + a.temp_size_in_bytes
        compiled -= a.alias_size_in_bytes
        return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"), "compiled_bytes": compiled}


class OpenClipStep:
    """open_clip's train step (CLIP model, ClipLoss, AdamW, grad clipping, logit-scale
    clamp) on the mmjax config's model, batch and precision."""

    def __init__(self, config, threads: int):
        torch = import_open_clip()
        import open_clip
        from open_clip.loss import ClipLoss

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = open_clip.CLIP(**open_clip_cfg(config))
        self.model.train()
        o = config.optim
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=o.lr,
            betas=(o.b1, o.b2),
            eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.loss = ClipLoss()
        self.grad_clip = o.grad_clip
        batch = random_batch(config, config.batch_size)
        images = batch["image"].astype(np.float32) / 255.0
        self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        self.text = torch.from_numpy(batch["text"].astype(np.int64))
        self.autocast = config.model.dtype == "bfloat16"

    def step(self) -> None:
        torch = self.torch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(self.images, self.text)
            if isinstance(out, dict):
                out = out["image_features"], out["text_features"], out["logit_scale"]
            loss = self.loss(*out[:3])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, np.log(100))

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t)
        return times


def open_clip_cfg(config) -> dict:
    """open_clip's model config for the mmjax config's ViT image and text towers (with
    `match_open_clip` applied, the two models have the same parameters)."""
    from mmjax.models import vit

    img, txt = config.model.towers.image, config.model.towers.text
    size, patch = vit.decode_variant(img.variant)
    width = img.width or size.width
    heads, depth = img.num_heads or size.num_heads, img.depth or size.depth
    return dict(
        embed_dim=config.model.embed_dim,
        quick_gelu=config.model.act == "quick_gelu",
        vision_cfg=dict(
            image_size=config.data.modalities.image.size,
            layers=depth,
            width=width,
            head_width=width // heads,
            mlp_ratio=(img.mlp_dim or size.mlp_dim) / width,
            patch_size=patch,
        ),
        text_cfg=dict(
            context_length=txt.context_length,
            vocab_size=txt.vocab_size,
            width=txt.width,
            heads=txt.num_heads,
            layers=txt.depth,
            mlp_ratio=txt.mlp_dim / txt.width,
        ),
    )


def match_open_clip(config) -> None:
    """open_clip's ViT: LayerNorm before the blocks, no patch-embedding bias."""
    config.model.towers.image.pre_norm = True
    config.model.towers.image.patch_bias = False


def import_open_clip():
    """torch, with open_clip importable: PyPI's torchvision (built against CUDA torch)
    fails to register two ops beside the CPU torch; declaring them first lets it import."""
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_open_clip.keep = lib
    return torch


def summarise(config, times: list[float], waited: float) -> dict:
    step_s = statistics.median(times)
    f = flops.step_flops(config)
    devices = jax.device_count()
    device = jax.local_devices()[0]
    peak = chips.peak_flops(device, config.model.dtype)
    tflops = f.model / step_s / devices / 1e12
    return {
        "step_s": step_s,
        "step_s_all": times,
        "samples_per_s_per_device": config.batch_size / step_s / devices,
        "model_tflop_per_step": f.model / 1e12,
        "recomputed_tflop_per_step": f.recompute / 1e12,
        "tflops_per_s_per_device": tflops,
        "hardware_tflops_per_s_per_device": f.hardware / step_s / devices / 1e12,
        "mfu": tflops * 1e12 / peak if peak else None,
        "peak_flops": peak,
        "data_wait_fraction": waited / sum(times),
        "device": device.device_kind,
        "devices": devices,
    }


def memory_only(config, use_streamed: bool) -> dict:
    mesh = mesh_lib.make_mesh(config.mesh)
    config_lib.check(config, jax.device_count(), jax.process_count())
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state.build(config, mesh)
        objective = losses.Objective(config.objectives, mesh)
        t = time.perf_counter()
        if use_streamed:
            parts = streamed.make_parts(built, objective, config, mesh)
            micro = streamed.micro_spec(config, mesh, objective)
            report = streamed.memory_report(
                parts, built.abstract, micro, extras_spec(config, mesh, objective)
            )
        else:
            c = config_lib.apply_overrides(config, {"check_memory": False})
            a = loop.compile_step(c, mesh, built, objective).memory_analysis()
            report = {
                "arguments": a.argument_size_in_bytes,
                "outputs": a.output_size_in_bytes,
                "temporaries": a.temp_size_in_bytes,
                "aliased": a.alias_size_in_bytes,
            }
            report["peak"] = (
                report["arguments"] + report["outputs"] + report["temporaries"] - report["aliased"]
            )
    report["compile_s"] = time.perf_counter() - t
    return report


def extras_spec(config, mesh, objective) -> dict:
    spec = loop.batch_spec(config, mesh)
    return {k: spec[k] for k in objective.batch_keys}


def gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def main() -> None:
    args = ARGS
    config = load(args.config, args.set)
    config.check_memory = False
    if args.open_clip:
        match_open_clip(config)
    result = {"config": args.config, "set": args.set, "devices": jax.device_count()}
    if args.memory:
        result["memory"] = memory_only(config, args.streamed)
        print(json.dumps(result["memory"], indent=1))
        for k, v in result["memory"].items():
            if isinstance(v, dict):
                print(
                    f"{k:9s} total {gib(v['total'])} (arguments {gib(v['arguments'])},"
                    f" temporaries {gib(v['temporaries'])})"
                )
        print(f"peak per device: {gib(result['memory']['peak'])}")
        Path(args.out).write_text(json.dumps(result, indent=2))
        return
    ours = MmjaxStep(config, args.fixed_batch)
    theirs = OpenClipStep(config, args.threads) if args.open_clip else None
    ours.run(args.warmup)
    if theirs:
        theirs.run(args.warmup)
    times, waited, their_times = [], 0.0, []
    for _ in range(args.rounds):
        t, w = ours.run(args.steps)
        times += t
        waited += w
        if theirs:
            their_times += theirs.run(args.steps)
    result["mmjax"] = {
        **summarise(config, times, waited),
        **ours.memory(),
        "compile_s": ours.compile_s,
    }
    m = result["mmjax"]
    mfu = f"{100 * m['mfu']:.1f}%" if m["mfu"] else f"n/a (no known peak for {m['device']})"
    print(
        f"mmjax: {m['step_s']:.3f} s/step, {m['samples_per_s_per_device']:.1f} samples/s/device,"
        f" {m['tflops_per_s_per_device']:.3f} TFLOP/s/device, MFU {mfu},"
        f" data wait {100 * m['data_wait_fraction']:.1f}%,"
        f" memory {gib(m['peak_bytes_in_use'] or m['compiled_bytes'])}"
        f" (compile {m['compile_s']:.1f} s)"
    )
    if theirs:
        o = statistics.median(their_times)
        result["open_clip"] = {"step_s": o, "step_s_all": their_times}
        result["ratio_mmjax_over_open_clip"] = m["step_s"] / o
        # per round medians: the pairs that ran under the same load
        n = args.steps
        pairs = [
            statistics.median(times[i * n : (i + 1) * n])
            / statistics.median(their_times[i * n : (i + 1) * n])
            for i in range(args.rounds)
        ]
        result["ratio_per_round"] = pairs
        print(
            f"open_clip: {o:.3f} s/step; mmjax / open_clip = {m['step_s'] / o:.2f}"
            f" (per round: {', '.join(f'{p:.2f}' for p in pairs)})"
        )
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"Wrote {args.out}.")


if __name__ == "__main__":
    errors.run(main)
