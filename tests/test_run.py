"""The MCAL run end to end: outputs, invalid settings, and resuming after a kill."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import synthetic
from mcal_jax import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, *overrides):
    env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
    command = [
        sys.executable, "-m", "launch.mcal", "--config=configs/synthetic.py:2000",
        f"--workdir={workdir}", *overrides,
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _ledger(workdir):
    with open(os.path.join(workdir, "ledger.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _purchases(workdir):
    return [r for r in _ledger(workdir) if r["kind"] == "purchase"]


def test_killed_run_resumes_without_rebuying_and_matches_uninterrupted(tmp_path):
    reference = _launch(tmp_path / "reference")
    output = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, output

    killed_dir = tmp_path / "killed"
    process = _launch(killed_dir)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # into round 3: training, scoring or buying
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _purchases(killed_dir)
    assert not (killed_dir / "summary.json").exists()

    resumed = _launch(killed_dir)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    after = _purchases(killed_dir)
    # Nothing paid for is lost: every purchase before the kill is still there, unchanged.
    assert after[: len(before)] == before
    # No label is bought twice.
    indices = np.concatenate([r["indices"] for r in after])
    assert len(indices) == len(np.unique(indices))
    assert len({r["key"] for r in after}) == len(after)
    # The result equals the uninterrupted run's.
    assert [r["indices"] for r in after] == [
        r["indices"] for r in _purchases(tmp_path / "reference")
    ]
    a = np.load(tmp_path / "reference" / "labels.npz")
    b = np.load(killed_dir / "labels.npz")
    for name in ("label", "source", "confidence"):
        np.testing.assert_array_equal(a[name], b[name])
    summary_a = json.loads((tmp_path / "reference" / "summary.json").read_text())
    summary_b = json.loads((killed_dir / "summary.json").read_text())
    assert summary_a["counts"] == summary_b["counts"]
    assert summary_a["cost_usd"]["human_labels"] == summary_b["cost_usd"]["human_labels"]


def test_outputs_and_summary(tmp_path):
    config = synthetic.get_config("1500")
    summary = run.mcal(config, str(tmp_path))
    n = summary["num_items"]
    assert n == 1500
    counts = summary["counts"]
    assert sum(counts.values()) == n
    assert counts["test"] == 150
    cost = summary["cost_usd"]
    assert cost["human_labels"] == pytest.approx(
        0.04 * (counts["test"] + counts["train"] + counts["residual"])
    )
    assert cost["total"] == pytest.approx(cost["human_labels"] + cost["training"] + cost["scoring"])
    assert cost["human_only"] == pytest.approx(0.04 * n)
    assert summary["error"]["upper_bound"] <= 0.05
    assert summary["error"]["upper_bound"] >= summary["error"]["estimated"]
    labels = np.load(tmp_path / "labels.npz")
    assert np.all(labels["label"] >= 0) and len(labels["label"]) == n
    assert int(np.sum(labels["source"] == "machine")) == counts["machine"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["rounds"]
    first = json.loads(lines[0])
    assert {"train_size", "delta", "cost_star_usd", "b_opt", "theta_star", "fit"} <= set(first)
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mcal.epsilon", 1.5, "mcal.epsilon=1.5 must lie in (0, 1)"),
        ("mcal.constraint", "both", "mcal.constraint='both'"),
        ("labeling.service", "-0.1", "labeling.service"),
        ("mcal.test_fraction", 0.999, "test_fraction + mcal.delta0_fraction must be below 1"),
    ],
)
def test_invalid_settings_stop_before_anything_is_bought(tmp_path, field, value, message):
    config = synthetic.get_config("1000")
    section, name = field.split(".")
    with config.unlocked():
        config[section][name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        run.mcal(config, str(tmp_path))
    assert not (tmp_path / "ledger.jsonl").exists()


def test_unknown_model_is_rejected(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.models = ("resnet9000",)
    with pytest.raises(ValueError, match="resnet9000"):
        run.mcal(config, str(tmp_path))


def test_candidate_architectures_run_side_by_side_and_are_all_charged(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.models = ("tiny", "small")
        config.mcal.max_rounds = 3
        config.mcal.selection_rounds = 2
    summary = run.mcal(config, str(tmp_path))
    state = json.loads((tmp_path / "state.json").read_text())
    charges = [r for r in _ledger(tmp_path) if r["kind"] == "charge"]
    first_round = {r["details"]["model"] for r in charges if r["key"].startswith("round1/")}
    assert first_round == {"tiny", "small"}  # both candidates trained and paid for
    last = state["rounds"][-1]
    plans = last["plans"]
    # The lead is the candidate whose plan is cheapest; a kept candidate is alone after.
    assert last["lead"] == min(plans, key=lambda m: plans[m]["cost_star_usd"])
    assert summary["model"] == last["lead"]
    assert summary["cost_usd"]["training"] == pytest.approx(
        sum(r["usd"] for r in charges if r["category"] == "training")
    )
