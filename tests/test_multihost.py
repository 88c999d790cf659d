"""Two processes under jax.distributed (CPU, gloo collectives) run MCAL exactly as one
process with two devices does, and only process 0 writes the workdir; with a host-placed
pool each process reads and scores only its shard, and the decisions from the shards are
those from the whole pool's scores."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(workdir, *flags):
    return [
        sys.executable, "-m", "launch.mcal", "--config=configs/synthetic.py:1000",
        f"--workdir={workdir}", "--config.num_devices=0", "--config.mcal.max_rounds=3",
        # Costs from the images processed, not the clock: runs compared decision for
        # decision must not depend on the seconds each measured (docs/algorithm.md, 5).
        "--config.cost.mode=per_image_epoch", *flags,
    ]  # fmt: skip


def _distributed_env(base, port, process_id):
    return dict(
        base,
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
        JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(process_id),
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )


def _run_two_processes(commands, base):
    """Runs ``commands[p]`` as process p of a two-process jax.distributed job; each must
    succeed. Returns their outputs (stdout and stderr together)."""
    port = _free_port()
    workers = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=_distributed_env(base, port, p),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for p, command in enumerate(commands)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return outputs


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The workdir of the run in one process with two devices (its pool on the devices; a
    pool on the host gives the same purchases and scores, tests/test_placement.py)."""
    workdir = tmp_path_factory.mktemp("multihost") / "single"
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    done = subprocess.run(_command(workdir), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_two_processes_equal_one_process_with_two_devices(tmp_path, single):
    base = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    _run_two_processes([_command(tmp_path / "multi")] * 2, base)

    a = json.loads((single / "summary.json").read_text())
    b = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert a["counts"] == b["counts"]
    assert a["cost_usd"]["human_labels"] == b["cost_usd"]["human_labels"]
    la, lb = np.load(single / "labels.npz"), np.load(tmp_path / "multi" / "labels.npz")
    np.testing.assert_array_equal(la["label"], lb["label"])
    np.testing.assert_allclose(la["confidence"], lb["confidence"], rtol=1e-4, atol=1e-6)
    # One writer: every purchase appears once in the ledger.
    lines = (tmp_path / "multi" / "ledger.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == len(set(keys))


def _purchases(workdir):
    """What the ledger bought and moved, in order: (kind, key, purpose, items, labels)."""
    entries = [json.loads(line) for line in (workdir / "ledger.jsonl").read_text().splitlines()]
    return [
        (e["kind"], e["key"], e["purpose"], e["indices"], e.get("labels"))
        for e in entries
        if e["kind"] in ("purchase", "move")
    ]


def test_two_processes_with_a_host_pool_buy_as_one_process_with_two_devices(tmp_path, single):
    base = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    host = "--config.data.placement=host"
    outputs = _run_two_processes([_command(tmp_path / "multi", host)] * 2, base)
    assert all("placed on the host" in output for output in outputs)
    bought = _purchases(single)
    assert len(bought) >= 4  # T, B0 and at least two rounds' batches, then T_cert, residual
    assert _purchases(tmp_path / "multi") == bought
    # The loop kept each process's scores on its own shard: one file a process and stage.
    single_scores = sorted(os.listdir(single / "scores"))
    multi_scores = sorted(os.listdir(tmp_path / "multi" / "scores"))
    assert "round1.npz" in single_scores
    stages = [name[: -len(".npz")] for name in single_scores]
    assert multi_scores == sorted(f"{s}.shard{p}of2.npz" for s in stages for p in range(2))
    for stage in stages:
        whole = np.load(single / "scores" / f"{stage}.npz")
        shards = [
            np.load(tmp_path / "multi" / "scores" / f"{stage}.shard{p}of2.npz") for p in (0, 1)
        ]
        assert [int(s["start"]) for s in shards] == [0, 500]
        np.testing.assert_array_equal(
            np.concatenate([s["predicted"] for s in shards]), whole["predicted"]
        )
        np.testing.assert_allclose(
            np.concatenate([s["confidence"] for s in shards]),
            whole["confidence"],
            rtol=1e-4,
            atol=1e-6,
        )
    single_csv = (single / "labels.csv").read_text().splitlines()
    multi_csv = (tmp_path / "multi" / "labels.csv").read_text().splitlines()
    assert len(single_csv) == 1001
    # Paths, labels and sources alike; confidences to float tolerance.
    assert [r.rsplit(",", 1)[0] for r in multi_csv] == [r.rsplit(",", 1)[0] for r in single_csv]
    np.testing.assert_allclose(
        [float(r.rsplit(",", 1)[1]) for r in multi_csv[1:]],
        [float(r.rsplit(",", 1)[1]) for r in single_csv[1:]],
        rtol=1e-4,
        atol=1e-6,
    )


# Scores a host-placed pool a shard per process and takes the run's decisions from the
# shards; saves them, the shard's scores and every pool index read, per process.
_SHARD_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from mcal_jax import host_images, models, parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax.data import Dataset
from mcal_jax.scores import error_profile

parallel.maybe_initialize_distributed()
read, gather = [], host_images.gather


def counted(images, indices):
    read.append(np.array(indices))
    return gather(images, indices)


host_images.gather = counted
rng = np.random.default_rng(3)
images = rng.integers(0, 255, (301, 28, 28, 1)).astype(np.uint8)
data = Dataset(images=images, labels=np.zeros(301, np.int32), num_classes=4, name="toy")
mesh = parallel.make_mesh()
pool = pool_lib.host_pool(data, mesh)
model = models.create_model("tiny", num_classes=4)
variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
variables = jax.tree.map(lambda x: pool_lib.replicate(mesh, np.asarray(x)), variables)
indices = np.arange(300, 2, -2)
tie_order = np.empty(301, np.int64)
tie_order[rng.permutation(301)] = np.arange(301)
test = np.sort(indices[::5])
labels = rng.integers(0, 4, len(test)).astype(np.int32)
shard = scoring.Scorer("tiny", pool, batch_size=32).score_shard(variables, indices)
profile = error_profile(shard, np.setdiff1d(indices, test), test, labels)
pseudo = shard.pseudo_labels(indices, 0.3, tie_order)
np.savez(
    sys.argv[1], start=shard.start, confidence=shard.confidence, predicted=shard.predicted,
    read=np.concatenate(read), indices=indices, tie_order=tie_order, test=test, labels=labels,
    chosen=shard.least_confident(indices, 20, tie_order), thresholds=profile.thresholds,
    test_errors=profile.test_errors, test_counts=profile.test_counts,
    pool_counts=profile.pool_counts, pseudo=pseudo[0], pseudo_labels=pseudo[1],
)
"""


def test_two_processes_score_their_own_shards_and_decide_as_one(tmp_path):
    from mcal_jax import profile
    from mcal_jax.scores import Scores

    base = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    single = dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    command = [sys.executable, "-c", _SHARD_SCRIPT]
    done = subprocess.run(
        [*command, str(tmp_path / "single.npz")], cwd=ROOT, env=single, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _run_two_processes([[*command, str(tmp_path / f"p{p}.npz")] for p in range(2)], base)

    one = np.load(tmp_path / "single.npz")
    shards = [np.load(tmp_path / f"p{p}.npz") for p in range(2)]
    assert [int(s["start"]) for s in shards] == [0, 150]
    indices = one["indices"]
    for p, shard in enumerate(shards):
        # A process reads its own shard's items, every one of them, and no other.
        stop = 150 if p == 0 else 301
        own = indices[(indices >= int(shard["start"])) & (indices < stop)]
        assert set(np.unique(shard["read"]).tolist()) == set(own.tolist())
    confidence = np.concatenate([s["confidence"] for s in shards])
    predicted = np.concatenate([s["predicted"] for s in shards])
    np.testing.assert_allclose(confidence, one["confidence"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predicted, one["predicted"])
    # The decisions from the shards are those from the two shards' scores put together.
    scores, tie_order = Scores(confidence, predicted), one["tie_order"]
    test, labels = one["test"], one["labels"]
    unlabeled = np.setdiff1d(indices, test)
    expected = profile.error_profile(
        confidence[unlabeled], confidence[test], predicted[test] == labels
    )
    pseudo = scores.pseudo_labels(indices, 0.3, tie_order)
    for shard in shards:
        np.testing.assert_array_equal(
            shard["chosen"], scores.least_confident(indices, 20, tie_order)
        )
        for field in ("thresholds", "test_errors", "test_counts", "pool_counts"):
            np.testing.assert_array_equal(shard[field], getattr(expected, field))
        np.testing.assert_array_equal(shard["pseudo"], pseudo[0])
        np.testing.assert_array_equal(shard["pseudo_labels"], pseudo[1])
