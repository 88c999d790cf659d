"""A workdir is safe from a second process and from lost files: mcal_jax.run.lock (one
process at a time) and mcal_jax.run.integrity (files that agree), on copies of one finished
run."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import ml_collections
import pytest

from mcal_jax import parallel, run
from mcal_jax.run import integrity
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


def test_a_run_whose_ledger_was_deleted_is_refused(workdir, workdir_files):
    os.remove(workdir / "ledger.jsonl")
    message = _refused(workdir, integrity.WorkdirMismatchError, "ledger.jsonl", workdir_files)
    assert message == (
        f"{workdir}/ledger.jsonl is missing, yet {workdir}/rounds.jsonl records 2 rounds "
        "trained on T_plan and B0: a rerun would buy those labels again; restore "
        f"{workdir}/ledger.jsonl, or start a new --workdir"
    )
    assert not (workdir / "ledger.jsonl").exists()


def test_a_run_whose_rounds_were_deleted_is_refused(workdir, workdir_files):
    os.remove(workdir / "rounds.jsonl")
    message = _refused(workdir, integrity.WorkdirMismatchError, "rounds.jsonl", workdir_files)
    assert message.startswith(
        f"{workdir}/rounds.jsonl is missing, yet {workdir}/ledger.jsonl holds the batch of "
        "round 2 ('round2/train' or 'round2/from_test')"
    )
    assert message.endswith(f"restore {workdir}/rounds.jsonl, or start a new --workdir")


def test_a_finished_run_whose_ledger_lost_its_residual_is_refused(workdir, workdir_files):
    ledger = workdir / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    assert '"key":"residual"' in lines[-1]
    ledger.write_text("".join(lines[:-1]))
    residual = json.loads((workdir / "summary.json").read_text())["counts"]["residual"]
    _refused(
        workdir,
        integrity.WorkdirMismatchError,
        f"summary.json counts {residual} labels bought for 'residual', yet .*ledger.jsonl holds 0",
        workdir_files,
    )


def _on_disk(workdir):
    files = Workdir(workdir, writer=False)
    return files.on_disk(files.find_ledger())


def test_what_a_kill_leaves_agrees(workdir):
    """The finished run, and the states a kill leaves: before anything was bought, with T
    and B0 bought before round 1 was recorded, with a round's batch bought (or the round
    trained and charged) before its record was written, the last one included."""
    disk = _on_disk(workdir)
    assert integrity.problem(disk) is None
    first, last = disk.rounds
    assert disk.batches == (first.train_size, last.train_size - first.train_size)
    assert last.stop and not first.stop
    fresh = integrity.OnDisk(
        folder=str(workdir), ledger_found=False, test_bought=False, batches=(), bought={},
        rounds_found=False, rounds=(), round_scores=False, after_rounds=(),
        summary_counts=None,
    )  # fmt: skip
    assert integrity.problem(fresh) is None
    bought_t_and_b0 = dataclasses.replace(
        disk, rounds_found=False, rounds=(), batches=disk.batches[:1], after_rounds=(),
        summary_counts=None, round_scores=False,
    )  # fmt: skip
    assert integrity.problem(bought_t_and_b0) is None
    assert integrity.problem(dataclasses.replace(bought_t_and_b0, round_scores=True)) is None
    one_behind = dataclasses.replace(disk, rounds=(first,), after_rounds=(), summary_counts=None)
    assert integrity.problem(one_behind) is None


def test_files_that_need_more_than_the_ledger_or_the_rounds_hold_are_named(workdir):
    disk = _on_disk(workdir)
    first, last = disk.rounds
    folder = str(workdir)

    def problem(**changes):
        return integrity.problem(dataclasses.replace(disk, **changes))

    # The ledger cut after round 1's batch: round 2 trained on more.
    assert problem(batches=disk.batches[:1]).startswith(
        f"{folder}/ledger.jsonl holds {first.train_size} labels for B up to round 2, yet "
        f"{folder}/rounds.jsonl records that round 2 trained on {last.train_size}"
    )
    # Scores of rounds, and no purchase of T or B0.
    assert problem(rounds=(), rounds_found=False, ledger_found=False).startswith(
        f"{folder}/ledger.jsonl is missing, yet {folder}/scores holds the scores of rounds"
    )
    assert problem(test_bought=False).startswith(
        f"{folder}/ledger.jsonl lacks the purchase of T_plan or B0, yet {folder}/rounds.jsonl"
    )
    # Two rounds ahead, or a batch after the stop.
    assert problem(rounds=()).startswith(f"{folder}/rounds.jsonl records 0 rounds, yet")
    assert "which a stopped run never buys" in problem(batches=(*disk.batches, 10))
    # Written after the last round, with no stop recorded.
    one_behind = problem(rounds=(first,), summary_counts=None)
    assert one_behind.startswith(
        f"{folder}/rounds.jsonl records 1 round, none stopping, yet {folder}/final.json, "
        f"{folder}/summary.json exist"
    )
