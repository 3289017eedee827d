"""One of the processes of tests/test_data_multihost.py: reads its share of webdataset
shards, builds the global batch, and writes both (its local batches, and the global
batches gathered back from all processes) for the test to compare."""

import sys

import ml_collections
import numpy as np


def main(process_id: int, num_processes: int, port: int, shards: str, out: str) -> None:
    from jax.experimental import multihost_utils

    from mmjax.parallel import mesh as mesh_lib
    from mmjax.parallel import sharding

    mesh_lib.maybe_initialize_distributed(
        ml_collections.ConfigDict(
            dict(
                initialize=True,
                coordinator_address=f"127.0.0.1:{port}",
                num_processes=num_processes,
                process_id=process_id,
                cpu_collectives="gloo",
            )
        )
    )
    import jax

    from tests.data_shards import iterator, wds_config

    config = wds_config(
        shards,
        **{
            "data.modalities.image.crop_scale": (1.0, 1.0),
            "data.modalities.image.crop_ratio": (1.0, 1.0),
            "data.modalities.image.decoder": "pil",
        },
    )
    mesh = mesh_lib.make_mesh(config.mesh)
    it = iterator(config, jax.process_index(), jax.process_count())
    local, gathered = [], []
    for _ in range(3):
        batch = next(it)
        local.append(batch["image"])
        global_batch = sharding.global_batch(batch, mesh)
        gathered.append(multihost_utils.process_allgather(global_batch["image"], tiled=True))
    it.close()
    np.savez(f"{out}/process_{process_id}.npz", local=np.stack(local), gathered=np.stack(gathered))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
