"""Progress lines, `workdir/metrics.jsonl` and TensorBoard events (via tensorboardX).

Both files live wherever the workdir does (local or gs://): `storage.AppendFile` writes
them, so on a bucket each flush uploads in the background and the step never waits.
"""

import contextlib
import json
import time
from collections.abc import Iterator, Mapping

import jax
import numpy as np

from mmjax import storage


class MetricWriter:
    """Writes scalars to metrics.jsonl and TensorBoard, on process 0 only."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.active:
            self._jsonl = storage.AppendFile(storage.join(workdir, "metrics.jsonl"))
            self._tb = storage.tensorboard_writer(storage.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():  # TensorBoard rejects "@" (recall@1) in names
                self._tb.add_scalar(k.replace("@", "_at_"), float(v), int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


# Running totals: reported as their latest value, not averaged over the interval.
COUNTERS = ("skipped", "skipped_in_a_row")


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Averages step metrics between reports and adds throughput, MFU and ETA.

    Device metrics are kept as arrays until a report, so logging does not force a
    host sync on every step. With `step_flops` (model FLOPs of one global step,
    `sweeps.flops.step_flops`) a report adds TFLOP/s per device, and with the chip's
    `peak` FLOP/s (`parallel.chips`) MFU; with no known peak MFU is left out, never
    guessed. `hardware_flops` (model + recomputation) gives the hardware TFLOP/s.
    """

    def __init__(
        self,
        total_steps: int,
        global_batch: int,
        num_devices: int,
        start_step: int,
        step_flops: float | None = None,
        peak: float | None = None,
        hardware_flops: float | None = None,
        device_kind: str = "",
    ):
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.num_devices = num_devices
        self.step_flops, self.peak, self.hardware_flops = step_flops, peak, hardware_flops
        self.device_kind = device_kind
        self._pending: list[Mapping[str, jax.Array]] = []
        self._data_wait = 0.0
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def add(self, metrics: Mapping[str, jax.Array], data_wait_s: float = 0.0) -> None:
        """One step's metrics, and how long the loop waited for its batch."""
        self._pending.append(metrics)
        self._data_wait += data_wait_s

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluations, saves) does not count against throughput."""
        start = time.perf_counter()
        yield
        self._last_time += time.perf_counter() - start

    def report(self, step: int) -> dict[str, float]:
        """Mean metrics since the last report plus steps/s, samples/s, FLOP/s, MFU, ETA."""
        fetched = jax.device_get(self._pending)
        self._pending = []
        out = {}
        for k in fetched[0] if fetched else ():
            values = [m[k] for m in fetched]
            out[k] = float(values[-1] if k in COUNTERS else np.mean(values))
        now = time.perf_counter()
        steps, elapsed = step - self._last_step, max(now - self._last_time, 1e-9)
        steps_per_s = steps / elapsed
        self._last_step, self._last_time = step, now
        out["steps_per_s"] = steps_per_s
        out["samples_per_s"] = steps_per_s * self.global_batch
        out["samples_per_s_per_device"] = out["samples_per_s"] / self.num_devices
        out.update(self.utilisation(steps_per_s))
        out["data_wait_s"] = self._data_wait / max(steps, 1)
        out["data_wait_fraction"] = min(self._data_wait / elapsed, 1.0)
        self._data_wait = 0.0
        out["eta_s"] = (self.total_steps - step) / max(steps_per_s, 1e-9)
        return out

    def utilisation(self, steps_per_s: float) -> dict[str, float]:
        """TFLOP/s per device (model and hardware FLOPs) and MFU, where known."""
        if not self.step_flops:
            return {}
        per_device = self.step_flops * steps_per_s / self.num_devices
        out = {"tflops_per_s_per_device": per_device / 1e12}
        if self.hardware_flops:
            hw = self.hardware_flops * steps_per_s / self.num_devices
            out["hardware_tflops_per_s_per_device"] = hw / 1e12
        if self.peak:
            out["mfu"] = per_device / self.peak
        return out

    def line(self, step: int, m: Mapping[str, float]) -> str:
        parts = [f"step {step}/{self.total_steps}"]
        if "loss" in m:
            parts.append(f"loss {m['loss']:.4f}")
        parts += [_term_part(term, m) for term in _terms(m)]
        for key, fmt in (("lr", "lr {:.2e}"), ("grad_norm", "gnorm {:.3f}")):
            if key in m:
                parts.append(fmt.format(m[key]))
        if m.get("skipped"):
            parts.append(f"skipped {int(m['skipped'])} non-finite")
        if m.get("data_skipped"):  # records skipped by the data pipeline, by reason
            reasons = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("data_skipped/")}
            parts.append("bad data " + ", ".join(f"{k} {int(v)}" for k, v in reasons.items() if v))
        parts.append(f"{m['steps_per_s']:.2f} steps/s")
        parts.append(f"{m['samples_per_s']:.0f} samples/s")
        parts.append(f"{m['samples_per_s_per_device']:.0f}/s/device")
        if "tflops_per_s_per_device" in m:
            parts.append(f"{m['tflops_per_s_per_device']:.3g} TFLOP/s/device")
            if "mfu" in m:
                parts.append(f"MFU {100 * m['mfu']:.1f}%")
            else:
                parts.append(f"MFU n/a (needs a known chip, not {self.device_kind or '?'})")
        if "data_wait_fraction" in m:
            parts.append(f"data wait {100 * m['data_wait_fraction']:.0f}%")
        parts.append(f"ETA {_fmt_duration(m['eta_s'])}")
        return " | ".join(parts)


def _terms(m: Mapping[str, float]) -> list[str]:
    """Objective terms present in the metrics: "<term>/loss" keys."""
    return [k[: -len("/loss")] for k in m if k.endswith("/loss") and "/" not in k[: -len("/loss")]]


def _term_part(term: str, m: Mapping[str, float]) -> str:
    """ "image_text 1.2345 acc 0.51/0.49 scale 14.3": a term's loss, accuracies, scale."""
    part = f"{term} {m[f'{term}/loss']:.4f}"
    accs = [v for k, v in m.items() if k.startswith(f"{term}/acc_") and "@" not in k]
    if accs:
        part += " acc " + "/".join(f"{a:.3f}" for a in accs)
    if f"{term}/scale" in m:
        part += f" scale {m[f'{term}/scale']:.2f}"
    return part
