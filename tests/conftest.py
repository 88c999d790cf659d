"""Test setup: 8 simulated CPU devices, so every data-parallel path runs sharded, and
each program compiled once."""

import atexit
import os
import shutil
import tempfile

import pytest

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests build the same programs anew (each run makes its own jitted functions, and the
# launcher tests start fresh processes): a compilation cache shared by the whole session,
# subprocesses included, compiles each program once. It changes no result: a program
# loaded from the cache is the one XLA compiled for the same computation and flags.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else a parent process's (or the user's)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mcal_jax_tests_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


# `make test` hands whole files to two workers in collection order: the slowest files go
# first, so that no long file starts when the other worker is nearly done (seconds per
# file on 2 cores, `--durations=0`: 143, 118, about 105, 84, 80, 44, 41, 39, 35, 34; the
# other files take under 30 s each).
_SLOWEST_FIRST = (
    "test_run.py",
    "test_multihost.py",
    "test_label_studio.py",
    "test_certificate.py",
    "test_train.py",
    "test_models.py",
    "test_placement.py",
    "test_semi_supervised.py",
    "test_gpu_check.py",
    "test_benchmarks_pool_scale.py",
)


def pytest_collection_modifyitems(items):
    """The files of `_SLOWEST_FIRST` first, in its order, then the rest as collected; the
    tests of a file keep their order."""
    rank = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _files(workdir):
    """Every file under ``workdir`` with its bytes and modification time."""
    found = {}
    for folder, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, workdir)] = (f.read(), os.stat(path).st_mtime_ns)
    return found


@pytest.fixture
def workdir_files():
    """A function giving every file under a workdir with its bytes and modification
    time: equal before and after a rerun means the rerun changed nothing."""
    return _files


@pytest.fixture(scope="session")
def finished_synthetic_run(tmp_path_factory):
    """(workdir, summary) of a finished 2-round MCAL run on 1,000 synthetic items, with
    200 test items (so that subsets of T differ), for the benchmarks that read runs."""
    from configs import synthetic
    from mcal_jax import run

    workdir = tmp_path_factory.mktemp("run")
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.max_rounds = 2
        config.mcal.plan_test_fraction = 0.2
    return str(workdir), run.mcal(config, str(workdir))
