"""The pool-scale benchmark: each (size, placement) measured in its own process, with every
number there, finite and consistent; a device placement over the budget is skipped."""

import json
import math
import os

from benchmarks import pool_scale as bench


def test_both_placements_of_a_tiny_pool_are_measured_apart(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    lines = []
    records = bench.run_all(
        [2000], ["device", "host"], pool_dir=str(tmp_path), env=env, log=lines.append,
        repeats=1, score_batch=512, train_items=256, train_batch=64, delta_fraction=0.01,
    )  # fmt: skip
    assert os.path.exists(tmp_path / "2000" / "images.npy")  # written by make_pool
    assert [(r["size"], r["placement"], r["placed"]) for r in records] == [
        (2000, "device", "device"),
        (2000, "host", "host"),
    ]
    for r in records:
        for key in bench.REQUIRED_KEYS:
            assert key in r, key
        for key in ("score_items_per_s", "train_images_per_s", "select_ms", "peak_rss_gb"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
        assert r["num_devices"] == 2 and r["select_items"] == 20 and r["train_items"] == 256
        assert r["pool_bytes"] == 2000 * 32 * 32 * 3
        assert r["peak_rss_gb"] < 1.5  # a 6 MB pool, small models
        assert json.loads(json.dumps(r, allow_nan=False)) == r
    device, host = records
    # A CPU reports no device memory: the live arrays, the two replicas of the pool among them.
    assert device["device_bytes"] >= 2 * device["pool_bytes"] > host["device_bytes"]
    ratio = host["score_items_per_s"] / device["score_items_per_s"]
    assert host["host_vs_device_scoring"] == device["host_vs_device_scoring"] == ratio
    table = bench.format_table(records)
    assert "2,000" in table and f"{ratio:.2f}" in table

    skipped = bench.run_all(
        [2000], ["device"], pool_dir=str(tmp_path), device_memory_gb=0.001, log=lines.append
    )
    assert skipped == []
    assert "N=2,000: device placement skipped, the pool's 0.01 GB exceed" in lines[-1]
