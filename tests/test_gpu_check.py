"""`make gpu-check`: it stops at once, saying why, where a piece is missing, and its steps
run and report on a CPU with the tiny model."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_a_gpu_it_fails_fast_with_a_clear_message(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no nvidia-smi on it
    done = _run(f"--out_dir={tmp_path / 'out'}", env=env)
    assert done.returncode != 0
    assert "no GPU here: nvidia-smi is not on PATH" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_missing_wheels_and_data_are_named_with_how_to_bring_them(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", {"no_such_module_here": ""})
    with pytest.raises(
        gpu_check.CheckError, match=r"no_such_module_here not importable.*pip download"
    ):
        gpu_check.preflight(
            wheels=str(tmp_path / "wheels"),
            deps=str(tmp_path / "site"),
            fashion_mnist=str(tmp_path),
            allow_cpu=True,
            tiny=True,
        )
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", {})
    monkeypatch.setattr(gpu_check, "DEBIAN_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(gpu_check.CheckError, match="no Fashion-MNIST IDX files"):
        gpu_check.preflight(
            wheels=str(tmp_path),
            deps=str(tmp_path),
            fashion_mnist=str(tmp_path),
            allow_cpu=True,
            tiny=False,
        )


def test_a_step_that_would_start_without_budget_is_skipped(tmp_path):
    step = gpu_check.steps(str(tmp_path), str(tmp_path), "fashion_mnist", tiny=True)[0]
    record = gpu_check.run_step(step, str(tmp_path), dict(os.environ), seconds_left=5)
    assert record["status"] == "skipped" and "5 s of budget left" in record["why"]


def test_the_full_plan_measures_what_the_issue_asks_for(tmp_path):
    plan = gpu_check.steps(str(tmp_path), "/w", "idx:/data", tiny=False)
    assert [s.name for s in plan] == [
        "train_cost",
        "core",
        "fashion_mnist",
        "pool_scale",
        "profile_resnet20",
        "profile_resnet18",
        "train_cost_resnet50",
        "select",
        "baselines",
    ]
    commands = {s.name: " ".join(s.argv) for s in plan}
    assert "--models=resnet18,resnet20 --batch_sizes=512" in commands["train_cost"]
    assert "--vs_torch" in commands["train_cost_resnet50"]
    assert "--pool_size=50000" in commands["core"] and "--image_shape=32x32x3" in commands["core"]
    assert "configs/fashion_mnist.py:select" in commands["select"]
    assert "--sizes=1280000 --model=resnet18" in commands["pool_scale"]
    assert "--placements=host --device_memory_gb=1" in commands["pool_scale"]
    assert "--model=resnet18 --batch_size=512" in commands["profile_resnet18"]
    assert "--model=resnet18 --batch_size=512" in commands["profile_resnet18"]
    assert "--config.baselines.run=True" in commands["baselines"]
    assert all(
        "--config.data.dataset=idx:/data" in commands[n] for n in ("fashion_mnist", "select")
    )


def test_pool_scale_numbers_are_read_from_its_jsonl(tmp_path):
    (step,) = [
        s for s in gpu_check.steps(str(tmp_path), "/w", "d", tiny=True) if s.kind == "pool_scale"
    ]
    assert f"--out={tmp_path / 'pool_scale.jsonl'}" in step.argv and "--sizes=2000" in step.argv
    line = {"size": 2000, "placement": "host", "score_items_per_s": 5.0}
    (tmp_path / "pool_scale.jsonl").write_text(json.dumps(line) + "\n")
    assert gpu_check.numbers(step, str(tmp_path), "", {}) == {"records": [line]}


def test_core_numbers_are_read_from_its_last_line(tmp_path):
    step = gpu_check.steps(str(tmp_path), str(tmp_path), "fashion_mnist", tiny=True)[1]
    stdout = "a table\n" + json.dumps({"fit_ms": 1.5})
    assert gpu_check.numbers(step, str(tmp_path), stdout, {}) == {"record": {"fit_ms": 1.5}}


def test_tiny_steps_run_and_write_results_logs_and_pngs(tmp_path):
    out = tmp_path / "out"
    done = _run(
        f"--out_dir={out}",
        f"--workdir_root={tmp_path / 'work'}",
        "--tiny",
        "--allow_cpu",
        "--only=train_cost,baselines",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["step"], r["status"]) for r in records] == [
        ("train_cost", "ok"),
        ("baselines", "ok"),
    ]
    (cost,) = records[0]["records"]
    assert cost["model"] == "tiny" and cost["flops_per_image"] > 0 and cost["mfu"] > 0
    run = records[1]
    summary = json.loads((out / "baselines" / "summary.json").read_text())
    assert run["total_usd"] == summary["cost_usd"]["total"] > 0
    assert sum(run["counts"].values()) == 600
    assert "baselines.png" in run["pngs"] and (out / "baselines" / "baselines.png").exists()
    assert (out / "train_cost.log").read_text() and (out / "baselines.log").exists()


HLO = """
%fused_conv (p0: f32[2,8,8,4], p1: f32[3,3,4,4]) -> f32[2,8,8,4] {
  %p0 = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,4,4]{3,2,1,0} parameter(1)
  ROOT %conv.1 = f32[2,8,8,4]{3,2,1,0} convolution(%p0, %p1), window={size=3x3}
}

%fused_relayout (p0: f32[2,8,8,4]) -> f32[4,8,8,2] {
  %p0 = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %max = f32[2,8,8,4]{3,2,1,0} maximum(%p0, %p0)
  ROOT %t = f32[4,8,8,2]{3,2,1,0} transpose(%max), dimensions={3,1,2,0}
}

ENTRY %main (a: f32[2,8,8,4], k: f32[3,3,4,4], i: s32[2]) -> f32[4,8,8,2] {
  %a = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %k = f32[3,3,4,4]{3,2,1,0} parameter(1)
  %i = s32[2]{0} parameter(2)
  %g = f32[2,8,8,4]{3,2,1,0} gather(%a, %i), offset_dims={1,2,3}
  %fusion.1 = f32[2,8,8,4]{3,2,1,0} fusion(%g, %k), kind=kCustom, calls=%fused_conv
  %r = f32[4]{0} reduce(%fusion.1, %zero), dimensions={0,1,2}, to_apply=%add
  %m = f32[2,8,8,4]{3,2,1,0} multiply(%fusion.1, %fusion.1)
  ROOT %relayout_fusion.2 = f32[4,8,8,2]{3,2,1,0} fusion(%m), kind=kLoop, calls=%fused_relayout
}
"""


def test_profile_ops_are_classified_by_what_their_hlo_computes():
    from benchmarks import profile_step

    kinds = profile_step.classify_hlo(HLO)
    assert kinds["fusion.1"] == "convolution"  # through the fused computation it calls
    assert kinds["g"] == "data (gather, crop, flip)"
    assert kinds["r"] == "normalisation (reductions)"
    assert kinds["relayout_fusion.2"] == "layout (transposes + fused)"
    assert kinds["m"] == "elementwise and update"


def test_profile_of_a_tiny_step_accounts_its_op_time():
    from benchmarks import profile_step

    record = profile_step.profile("tiny", 32, (28, 28, 1), steps=2)
    shares = record["op_share"]
    assert set(shares) == set(profile_step.CATEGORIES)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert record["matched_events"] > 0 and shares["convolution"] > 0.1
    assert 0 < sum(record["op_ms_per_step"].values()) < 2 * record["step_ms"]
