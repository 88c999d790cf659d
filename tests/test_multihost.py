"""Two processes under jax.distributed (CPU, gloo collectives) run MCAL exactly as one
process with two devices does, and only process 0 writes the workdir."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(workdir):
    return [
        sys.executable, "-m", "launch.mcal", "--config=configs/synthetic.py:1000",
        f"--workdir={workdir}", "--config.num_devices=0", "--config.mcal.max_rounds=3",
    ]  # fmt: skip


def test_two_processes_equal_one_process_with_two_devices(tmp_path):
    base = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    single = dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        _command(tmp_path / "single"), cwd=ROOT, env=single, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    port = _free_port()
    workers = []
    for process_id in range(2):
        env = dict(
            base,
            XLA_FLAGS="--xla_force_host_platform_device_count=1",
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(process_id),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
        workers.append(
            subprocess.Popen(
                _command(tmp_path / "multi"),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    for worker in workers:
        output = worker.communicate(timeout=600)[0]
        assert worker.returncode == 0, output[-3000:]

    a = json.loads((tmp_path / "single" / "summary.json").read_text())
    b = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert a["counts"] == b["counts"]
    assert a["cost_usd"]["human_labels"] == b["cost_usd"]["human_labels"]
    la, lb = np.load(tmp_path / "single" / "labels.npz"), np.load(tmp_path / "multi" / "labels.npz")
    np.testing.assert_array_equal(la["label"], lb["label"])
    np.testing.assert_allclose(la["confidence"], lb["confidence"], rtol=1e-4, atol=1e-6)
    # One writer: every purchase appears once in the ledger.
    lines = (tmp_path / "multi" / "ledger.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys))
