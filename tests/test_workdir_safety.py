"""A workdir is safe from a second process: mcal_jax.run.lock (one process at a time), on
copies of one finished run."""

import json
import os
import re
import shutil
import subprocess
import sys

import ml_collections
import pytest

from mcal_jax import parallel, run
from mcal_jax.run.lock import LOCK_FILE, WorkdirBusyError, WorkdirLock
from mcal_jax.run.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A second process that takes a workdir's lock, says so, and holds it until killed.
HOLDER = (
    "import sys\n"
    "from mcal_jax.run.lock import WorkdirLock\n"
    "WorkdirLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def workdir(finished_synthetic_run, tmp_path):
    """A copy of the shared finished run (2 rounds on 1,000 items)."""
    copy = tmp_path / "run"
    shutil.copytree(finished_synthetic_run[0], copy)
    return copy


def _config(workdir):
    """The config the run was started with."""
    return ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))


def _refused(workdir, error, message, workdir_files):
    """Runs MCAL in ``workdir`` expecting ``error`` matching ``message``; checks that no
    file was written (nothing bought, no score overwritten, no ledger created)."""
    before = workdir_files(workdir)
    with pytest.raises(error, match=message) as refused:
        run.mcal(_config(workdir), str(workdir))
    assert workdir_files(workdir) == before
    return str(refused.value)


def test_a_second_process_is_refused_until_the_holder_dies(
    workdir, finished_synthetic_run, workdir_files
):
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        message = _refused(
            workdir, WorkdirBusyError, f"is in use: process {holder.pid} on ", workdir_files
        )
        assert message.startswith(f"workdir {workdir} is in use")
    finally:
        holder.kill()
        holder.wait()
    # Killed, it leaves its lock file behind, which holds no lock: the rerun goes on.
    assert (workdir / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    before = workdir_files(workdir)
    del before[LOCK_FILE]
    assert run.mcal(_config(workdir), str(workdir)) == finished_synthetic_run[1]
    assert workdir_files(workdir) == before  # and the run removed the lock file


def test_the_lock_refuses_while_held_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "new"
    with WorkdirLock(folder):
        assert (folder / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        with pytest.raises(WorkdirBusyError, match=rf"{re.escape(str(folder))} is in use"):
            WorkdirLock(folder).acquire()
    assert not folder.exists()  # created for the lock, and nothing was written there
    with WorkdirLock(folder):  # released: taken again
        (folder / "ledger.jsonl").write_text("")
    assert os.listdir(folder) == ["ledger.jsonl"]


def test_the_other_processes_of_a_job_refuse_with_process_0(tmp_path, monkeypatch):
    """A process that does not write takes no lock, and refuses when process 0 found the
    workdir in use, naming the holder process 0 found."""
    monkeypatch.setattr(parallel, "main_process_value", lambda value: 4321)
    refused = pytest.raises(WorkdirBusyError, match="is in use: process 4321 holds")
    with refused, Workdir(tmp_path / "run", writer=False).locked():
        pass
    assert not (tmp_path / "run").exists()
