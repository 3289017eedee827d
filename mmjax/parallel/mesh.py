"""The device mesh from the config, and multi-host initialisation."""

import logging

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Starts JAX's multi-host runtime when the config asks for it.

    With no coordinator given, JAX discovers it (Cloud TPU, SLURM, Open MPI); on a GPU
    cluster without those, give coordinator_address, num_processes and process_id.
    """
    if not config.initialize:
        return
    if config.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    kwargs = {}
    if config.coordinator_address:
        kwargs = dict(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
    jax.distributed.initialize(**kwargs)
    logging.info(
        "Process %d of %d; %d local and %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves the one -1 axis size to the devices that the others leave."""
    sizes = [config[a] for a in AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"At most one mesh axis may be -1, got {dict(zip(AXES, sizes))}.")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if num_devices % fixed:
        raise ValueError(
            f"config.mesh {dict(zip(AXES, sizes))} does not divide {num_devices} devices."
        )
    sizes = [num_devices // fixed if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"config.mesh {dict(zip(AXES, sizes))} uses {int(np.prod(sizes))} devices but"
            f" {num_devices} are present; set one axis to -1."
        )
    return tuple(sizes)


def make_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """Mesh over ("data", "fsdp", "tensor") with Auto axis types on every JAX version."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(config, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)
