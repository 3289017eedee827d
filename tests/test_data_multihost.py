"""Two JAX processes (gloo on 127.0.0.1, 4 fake CPU devices each) read disjoint
webdataset shards, and the global batch is the union of their local batches."""

import os
import subprocess
import sys

import numpy as np

from mmjax.data import wds
from tests.data_shards import decoded_images, write_shards
from tests.helpers import cli_env
from tests.test_multihost import REPO, free_port


def test_processes_read_disjoint_shards_and_the_global_batch_is_their_union(tmp_path):
    shards = tmp_path / "shards"
    write_shards(str(shards), shards=4, per_shard=20, image_size=16)
    port = free_port()
    env = cli_env(4)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.data_multihost_worker",
                str(i),
                "2",
                str(port),
                str(shards),
                str(tmp_path),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    runs = [np.load(tmp_path / f"process_{i}.npz") for i in range(2)]

    # Which shard each image came from (decoded independently, with Pillow).
    names = sorted(f for f in os.listdir(shards) if f.endswith(".tar"))
    origin = {img: name for name in names for img in decoded_images(str(shards / name))}
    read = [{origin[img.tobytes()] for img in r["local"].reshape(-1, 16, 16, 3)} for r in runs]
    assert not read[0] & read[1]  # disjoint shards
    for p in range(2):  # ... and the ones wds.process_shards assigns
        assert read[p] <= {names[i] for i in wds.process_shards(4, 0, 0, 0, p, 2)}

    for step in range(3):
        a, b = runs[0]["gathered"][step], runs[1]["gathered"][step]
        np.testing.assert_array_equal(a, b)  # every process sees the same global batch
        union = np.concatenate([runs[0]["local"][step], runs[1]["local"][step]])
        assert len(a) == 16
        assert sorted(x.tobytes() for x in a) == sorted(x.tobytes() for x in union)
