"""Run and sweep reports, on workdirs written by hand as records of :mod:`mcal_jax.run`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from summaries import NUM_TEST, USD_PER_LABEL, N, baselines_json, summary_json

from mcal_jax import report, sweep_report
from mcal_jax.controller import Plan
from mcal_jax.fit import PowerLawFit, TrainingCostModel
from mcal_jax.profile import THETAS
from mcal_jax.run import state
from mcal_jax.run.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SIZES = (100, 200, 300, 400)
BASELINES = baselines_json(
    {"0.01": 52.0, "0.02": 44.0, "0.05": 41.5, "0.1": 47.0, "0.2": 60.0},
    hindsight_usd=30.25,
    hindsight_fraction=0.02,
)


def _true_error(b):
    """A learning curve per θ: confident fractions err less (Eq. 2 with 1/k = 0)."""
    return 0.6 * THETAS[:, None] ** 1.5 * np.asarray(b, float)[None, :] ** -0.5


def _summary(total=33.3, baselines=None):
    return summary_json(total, baselines)


def _write_run(workdir, summary=None):
    """A finished 4-round run of model "small": summary.json and its round records."""
    os.makedirs(workdir, exist_ok=True)
    counts = np.round(THETAS * NUM_TEST)[None, :].repeat(len(TRAIN_SIZES), 0)
    errors = np.round(_true_error(TRAIN_SIZES).T * counts)
    files = Workdir(workdir, writer=True)
    records = []
    for r, b in enumerate(TRAIN_SIZES, 1):
        grid = np.round(np.linspace(b, N - NUM_TEST, 50))
        usd = USD_PER_LABEL * (N - 0.9 * (N - NUM_TEST - grid) * np.minimum(1, grid / 800))
        usd += 0.002 * grid
        best = int(np.argmin(usd))
        stop = r == len(TRAIN_SIZES)
        plan = Plan(
            b_opt=int(grid[best]),
            theta_star=0.7,
            num_machine=1200,
            machine_error=0.02,
            machine_bound=0.025,
            cost_star_usd=float(usd[best]),
            cost_now_usd=float(usd[0]),
            saving_usd=float(usd[0] - usd[best]),
            saving_uncertainty_usd=1.5,
            human_labels_usd=30.0,
            training_so_far_usd=1.0,
            future_training_usd=0.5,
            scoring_usd=0.05,
            future_rounds=2,
            next_delta=0 if stop else 100,
            stable=r >= 3,
            no_longer_pays=stop,
            stop=stop,
            reason="B_opt ≤ |B|" if stop else f"|S| grows, round {r}",
            cert_size=150,
            b_grid=grid.astype(int),
            cost_by_b=usd,
            theta_star_by_b=np.full(grid.shape, 0.7),
            cert_size_by_b=np.full(grid.shape, 150),
            # The true curve, with a bias that shrinks as rounds add points.
            error_model=PowerLawFit(
                thetas=THETAS,
                alpha=0.6 * THETAS**1.5 * (1 + 0.3 / r),
                gamma=np.full(THETAS.shape, 0.5, np.float32),
                inv_k=np.zeros(THETAS.shape, np.float32),
                trusted=counts[r - 1] >= 20,
            ),
            cost_model=TrainingCostModel(1e-6, 0.0, 8.0),
        )
        measured = state.ModelRound(
            model="small",
            train_size=b,
            test_errors=tuple(int(e) for e in errors[r - 1]),
            test_counts=tuple(int(c) for c in counts[r - 1]),
            training_usd=0.3,
            scoring_usd=0.01,
            epochs=8,
            images=8 * b,
            device_seconds=12.5 * r,
            scoring_seconds=1.0,
            certified_machine=1100,
            plan=plan,
        )
        record = state.RoundRecord(
            round=r,
            lead="small",
            kept=("small",),
            candidates={"small": measured},
            labels_usd=4.0,
            spent_usd=4.0 + 4.0 * r,
            stop=stop,
            reason=plan.reason,
            next_batch=() if stop else tuple(range(1000 + 100 * r, 1100 + 100 * r)),
        )
        files.append_round(record)
        records.append(record)
    files.write_metrics(records)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary or _summary(), f)
    return records


def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 1024, path


def test_write_report_plots_and_tables(tmp_path):
    rounds = _write_run(tmp_path, _summary(baselines=BASELINES))
    paths = report.write_report(str(tmp_path))
    names = ["error_vs_b.png", "cost_vs_b.png", "cost_breakdown.png", "baselines.png"]
    assert paths == [str(tmp_path / "report" / n) for n in [*names, "summary.md"]]
    for path in paths[:-1]:
        _assert_png(path)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "**33.30 USD**" in text and "| cost_usd.total | 33.30 |" in text
    for key, value in {
        "test": 100,
        "train": 400,
        "machine": 1200,
        "certify": 150,
        "residual": 150,
    }.items():
        assert f"| counts.{key} | {value} |" in text
    assert "| oracle_al | 5 | 41.50 |" in text
    assert "| hindsight | 2 | 30.25 |" in text
    assert "| AL(δ = 10%) | 10 | 47.00 |" in text
    # One row per round, from the round records; "|" inside reasons is escaped.
    for r, record in enumerate(rounds, 1):
        plan = record.plan
        assert f"| {r} | small | {TRAIN_SIZES[r - 1]} | " in text
        assert f"| {plan.cost_star_usd:.2f} | {plan.b_opt} | 0.70 |" in text
    assert "Stopped: B_opt ≤ |B|: buying more labels no longer pays" in text
    assert "![baselines](baselines.png)" in text


def test_report_without_baselines(tmp_path):
    _write_run(tmp_path / "plain")
    paths = report.write_report(str(tmp_path / "plain"))
    assert [os.path.basename(p) for p in paths] == [
        "error_vs_b.png",
        "cost_vs_b.png",
        "cost_breakdown.png",
        "summary.md",
    ]
    assert "## Baselines" not in (tmp_path / "plain" / "report" / "summary.md").read_text()


def test_measured_error_uses_pseudo_count_for_zero_errors():
    rate, zero = report._measured(np.array([0.0, 3.0, 0.0]), np.array([20.0, 30.0, 0.0]))
    np.testing.assert_allclose(rate[:2], [0.5 / 20, 0.1], rtol=1e-6)
    assert np.isnan(rate[2])
    assert zero.tolist() == [True, False, False]


@pytest.mark.parametrize("missing", ["summary.json", "rounds.jsonl"])
def test_unfinished_workdir_names_the_missing_file(tmp_path, missing):
    _write_run(tmp_path)
    os.remove(tmp_path / missing)
    with pytest.raises(FileNotFoundError, match=rf"{missing} not found.*not a finished"):
        report.write_report(str(tmp_path))


def _write_point(sweep, name, *, service, seed, total, savings_total=None, al=None):
    workdir = sweep / name
    baselines = None if al is None else baselines_json(al, hindsight_usd=total - 5)
    summary = _summary(total=total, baselines=baselines)
    summary["cost_usd"]["human_only"] = 80.0 if service == "amazon" else 6.0
    summary["savings_vs_human_only"] = 1 - total / summary["cost_usd"]["human_only"]
    _write_run(workdir, summary)
    config = {"seed": seed, "labeling": {"service": service, "error_rate": 0.0}, "models": ["s"]}
    (workdir / "config.json").write_text(json.dumps(config))


def test_sweep_report_mean_and_std_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    _write_point(sweep, "a0", service="amazon", seed=0, total=30.0, al={"0.05": 40.0})
    _write_point(sweep, "a1", service="amazon", seed=1, total=36.0, al={"0.05": 50.0})
    _write_point(sweep, "s0", service="satyam", seed=0, total=2.0)
    _write_point(sweep, "s1", service="satyam", seed=1, total=3.0)
    os.makedirs(sweep / "running")  # unfinished: no summary.json yet
    (sweep / "running" / "config.json").write_text("{}")

    paths = sweep_report.sweep_report(str(sweep))
    assert [os.path.basename(p) for p in paths] == ["cost_vs_delta_1.png", "summary.md"]
    _assert_png(paths[0])
    text = (sweep / "report" / "summary.md").read_text()
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if " | 2 | " in line}
    amazon, satyam = rows["| labeling.service=amazon"], rows["| labeling.service=satyam"]
    # totals 30, 36: mean 33, sample std 4.24; savings 1 − total/80: 58.75 ± 5.30 %.
    assert "| 33.00 ± 4.24 | 80.00 ± 0.00 | 58.75 ± 5.30 |" in amazon
    # totals 2, 3: mean 2.5, std 0.71; savings 1 − total/6: 58.33 ± 11.79 %.
    assert "| 2.50 ± 0.71 | 6.00 ± 0.00 | 58.33 ± 11.79 |" in satyam
    assert "## Baselines: labeling.service=amazon" in text
    assert "| AL(δ = 5%) | 45.00 ± 7.07 |" in text
    assert "| hindsight | 28.00 ± 4.24 |" in text
    assert "## Baselines: labeling.service=satyam" not in text
    assert "running (no summary.json)" in text


def test_sweep_report_without_finished_points(tmp_path):
    os.makedirs(tmp_path / "p0")
    with pytest.raises(ValueError, match="holds no finished run"):
        sweep_report.sweep_report(str(tmp_path))


def test_launcher_writes_report_and_rejects_both_flags(tmp_path):
    _write_run(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "launch.report"]
    done = subprocess.run(
        [*command, f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report" / "summary.md").exists()
    both = [*command, f"--workdir={tmp_path}", f"--sweep={tmp_path}"]
    done = subprocess.run(both, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "workdir" in done.stderr and "sweep" in done.stderr
