"""The training loop, top to bottom: mesh, model, data, state, step, then iterate."""

import contextlib
import json
import logging

import flax.linen as nn
import jax
import ml_collections

from mmjax import config as config_lib
from mmjax import evals, losses, state, storage
from mmjax import workdir as workdir_lib
from mmjax.checkpoint import Checkpointer
from mmjax.data import modalities, pipeline
from mmjax.metrics import MetricWriter, Progress
from mmjax.parallel import agree, chips, sharding
from mmjax.parallel import mesh as mesh_lib
from mmjax.sweeps import flops
from mmjax.train import (
    compile_cache,
    guard,
    memory,
    preemption,
    prefetch,
    profile,
    step,
    streamed,
)

MEMORY_HINT = (
    "Lower config.batch_size, raise config.accum_steps, set config.model.remat='full' or"
    " model.dtype='bfloat16', add devices, or try the config's runlocal variant (e.g."
    " configs/clip_vitb.py:runlocal)."
)


def log_param_counts(abstract: state.TrainState) -> int:
    params = abstract.params
    total = state.count_params(params)
    towers = {k: state.count_params(v) for k, v in params.items() if isinstance(v, dict)}
    parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in towers.items())
    logging.info("Model parameters: %d (%.2fM; %s).", total, total / 1e6, parts)
    return total


def batch_spec(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch: every data modality, sharded over the batch axes."""
    shard = sharding.batch_sharding(mesh)
    return {
        name: jax.ShapeDtypeStruct((config.batch_size, *shape), dtype, sharding=shard)
        for name, (shape, dtype) in modalities.example_specs(config).items()
    }


def compile_step(config, mesh, built: state.Built, objective: losses.Objective):
    """The jitted, AOT-compiled train step; refuses to run one that cannot fit."""
    train_step = jax.jit(
        step.make_train_step(built.model, objective, built.tx, built.schedule, config),
        in_shardings=(built.shardings, sharding.batch_sharding(mesh)),
        out_shardings=(built.shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    compiled = train_step.lower(built.abstract, batch_spec(config, mesh)).compile()
    if config.check_memory:
        needed = memory.check_fits(compiled, jax.local_devices()[0], MEMORY_HINT)
        if needed:
            logging.info("Train step needs %.2f GiB per device.", needed / 2**30)
    return compiled


def counted_step_flops(config: ml_collections.ConfigDict, workdir: str) -> flops.StepFlops:
    """`flops.step_flops`, kept in the workdir: tracing the model to count them takes
    seconds that a restart (whose step comes from the compilation cache) can skip."""
    fields = ("model", "objectives", "batch_size", "accum_steps")
    key = json.dumps(
        {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in fields},
        sort_keys=True,
        default=str,
    )
    path = storage.join(workdir, "step_flops.json")
    try:
        saved = json.loads(storage.read_text(path))
        if saved["key"] == key:
            return flops.StepFlops(saved["model"], saved["recompute"])
    except (OSError, ValueError, KeyError):
        pass
    counted = flops.step_flops(config)
    if jax.process_index() == 0:
        record = {"key": key, "model": counted.model, "recompute": counted.recompute}
        with contextlib.suppress(OSError):  # a read-only workdir: count again next time
            storage.write_text(path, json.dumps(record))
    return counted


def throughput_accounting(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """`Progress` arguments for TFLOP/s and MFU: the step's FLOPs, counted once, and the
    chip's peak for the activation dtype (None for an unknown chip: no MFU)."""
    f = counted_step_flops(config, workdir)
    device = jax.local_devices()[0]
    peak = chips.peak_flops(device, config.model.dtype)
    logging.info(
        "Train step: %.4g model TFLOP (+%.4g recomputed) over the global batch; peak %s.",
        f.model / 1e12,
        f.recompute / 1e12,
        f"{peak / 1e12:.0f} TFLOP/s per device" if peak else f"unknown for {device.device_kind}",
    )
    return dict(
        step_flops=f.model, hardware_flops=f.hardware, peak=peak, device_kind=device.device_kind
    )


def restore_or_init(
    ckpt: Checkpointer, config, built: state.Built, data_iter, batches_per_step: int = 1
):
    """(state, first step): the latest checkpoint with its data position, or a fresh start.

    `batches_per_step`: data batches one step reads (micro-batches, streamed)."""
    restored = ckpt.restore_newest(built.abstract, data_iter)
    if restored is None:
        fresh = state.init_state(built.init_fn, jax.random.key(config.seed), built.shardings)
        return state.init_from(config, built, fresh), 0
    start, train_state, data_restored = restored
    if not data_restored:
        logging.warning(
            "Checkpoint %d has no data position for this process layout (written by another"
            " number of processes, or imported weights): the position is derived from the seed"
            " and the step instead (exact for random-access sources).",
            start,
        )
        pipeline.seek(data_iter, start * batches_per_step)
    return train_state, start


def train(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the last reported metrics.

    Raises `preemption.Preempted` after saving when asked to stop (SIGTERM), and
    `guard.NonFiniteError` after too many non-finite steps in a row.
    """
    mesh = mesh_lib.make_mesh(config.mesh)
    config_lib.check(config, jax.device_count(), jax.process_count())
    record = workdir_lib.prepare(workdir, config, overwrite)  # config.json: at commit()
    compile_cache.enable(config.compile_cache_dir, workdir)
    logging.info("Mesh %s over %d processes.", dict(mesh.shape), jax.process_count())

    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.as_rules(config.mesh.rules)):
        built = state.build(config, mesh)
        log_param_counts(built.abstract)
        objective = losses.Objective(config.objectives, mesh)

        # Streamed accumulation (train/streamed.py) reads micro-batches, twice per step.
        streaming = config.accum_streamed and config.accum_steps > 1
        data_config = streamed.micro_config(config) if streaming else config
        data_iter = pipeline.train_iterator(data_config, jax.process_index(), jax.process_count())
        compiled = None if streaming else compile_step(config, mesh, built, objective)

        ckpt_dir = storage.join(workdir, "checkpoints")
        ckpt = Checkpointer(ckpt_dir, config.ckpt_every, config.keep_ckpts)
        per_step = config.accum_steps if streaming else 1
        train_state, start = restore_or_init(ckpt, config, built, data_iter, per_step)
        profile.log_device_memory("after initialisation")

        evaluators = evals.build_evaluators(evals.EvalContext(built.model, mesh, config))
        writer = MetricWriter(workdir)
        progress = Progress(
            config.total_steps,
            config.batch_size,
            jax.device_count(),
            start,
            **throughput_accounting(config, workdir),
        )
        profiler = profile.StepProfiler(config.profile, workdir)
        nonfinite = guard.NonFiniteGuard(config.max_nonfinite_in_a_row, ckpt.directory)
        watcher = preemption.PreemptionWatcher(config.preemption_check_every)
        last: dict[str, float] = {}
        end = min(config.stop_at_step or config.total_steps, config.total_steps)
        record.commit()  # the run has started: a failure before here leaves no record
        logging.info("Training from step %d to %d.", start, end)
        # The next batches go to the devices while a step runs; its state is that of the
        # batch last taken, so checkpoints of `run.data` resume exactly (train/prefetch.py).
        if streaming:
            run = streamed.runner(built, objective, config, mesh, data_iter)
        else:
            to_device = lambda b: sharding.global_batch(b, mesh)
            batches = prefetch.prefetch(data_iter, to_device, config.data.device_prefetch)
            run = prefetch.PrefetchedStep(compiled, batches)
        # The first step's collectives start together: gloo (CPU) gives a process that
        # arrives late only 30 s, and compilation and restores take uneven times.
        agree.barrier("first_step")
        try:
            for i in range(start + 1, end + 1):
                profiler.before(i)
                train_state, metrics = run(train_state)
                profiler.after(i, metrics)
                nonfinite.check(i, metrics["skipped_in_a_row"], ckpt.latest_step())
                progress.add(metrics, run.wait_s)
                done = i == end
                if i % config.log_every == 0 or done:
                    last = {**progress.report(i), **pipeline.skip_counts(run.data)}
                    logging.info(progress.line(i, last))
                    writer.write(i, last)
                for e in evaluators:
                    if e.due(i, done):
                        with progress.paused():
                            results = e.run(train_state.params, state.ema_params(train_state))
                        logging.info("step %d | %s", i, json.dumps(results))
                        writer.write(i, results)
                        last.update(results)
                stop = watcher.should_stop(i)
                if i % config.ckpt_every == 0 or done or stop:
                    ckpt.save(i, train_state, run.data)
                if stop:
                    raise preemption.Preempted(i, stop)
            nonfinite.flush(ckpt.latest_step())
        finally:
            profiler.close()
            run.data.close()
            ckpt.close()  # waits for in-flight saves: exiting earlier would lose them
            watcher.close()  # only now: a SIGTERM during the wait must not kill the save
            writer.close()
    return last
