"""The MCAL run end to end: outputs, invalid settings, resuming after a kill, rerunning a
finished or damaged workdir, an exhausted pool, a diverged model, and the data check."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import synthetic
from mcal_jax import data, parallel, run, train
from mcal_jax.ledger import Ledger
from mcal_jax.run.workdir import Workdir

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


def _decided(summary):
    """What a run decided: its counts, certificate, rounds and why it stopped. (A round run
    again after a kill measures its device time again, so the cost terms quoted after the
    reason's first clause may move in their last digits.)"""
    fields = ("counts", "error", "threshold", "rounds", "model")
    return {**{k: getattr(summary, k) for k in fields}, "stop": summary.stop_reason.split(";")[0]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the synthetic config on 1,500 items, and its summary."""
    workdir = tmp_path_factory.mktemp("finished")
    summary = run.mcal(synthetic.get_config("1500"), str(workdir))
    return workdir, summary


def _copy(finished, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(finished[0], workdir)
    return workdir


# Device time priced from the images trained and scored, not from the seconds measured: a
# plan reads the training cost, and two runs never measure the same seconds, so runs
# compared decision for decision must not price by the clock (docs/algorithm.md, 5).
EXACT_COSTS = "--config.cost.mode=per_image_epoch"


def test_killed_run_resumes_without_rebuying_and_matches_uninterrupted(tmp_path):
    reference = _launch(tmp_path / "reference", EXACT_COSTS)
    output = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, output

    killed_dir = tmp_path / "killed"
    process = _launch(killed_dir, EXACT_COSTS)
    rounds = killed_dir / "rounds.jsonl"
    deadline = time.time() + 300
    while not (rounds.exists() and rounds.read_text().count("\n") >= 2):
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # into round 3: training, scoring or buying
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _purchases(killed_dir)
    assert not (killed_dir / "summary.json").exists()

    resumed = _launch(killed_dir, EXACT_COSTS)
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


def test_outputs_and_summary(finished):
    workdir, summary = finished
    n = summary.num_items
    assert n == 1500
    counts = summary.counts
    assert sum(dataclasses.astuple(counts)) == n
    # Active learning chose some items of T_plan (200 items: 2% of N, at least 200): they
    # left T_plan for B with the labels T_plan bought.
    moved = [r["indices"] for r in _ledger(workdir) if r["kind"] == "move"]
    assert moved and all(r["purpose"] == "train" for r in _ledger(workdir) if r["kind"] == "move")
    assert counts.test == 200 - sum(map(len, moved))
    ledger = Ledger(workdir / "ledger.jsonl", writer=False)
    train, plan_test = ledger.bought("train")[0], ledger.bought("test")[0]
    assert np.isin(np.concatenate(moved), train).all() and len(train) == counts.train
    # T_cert: bought once, after the last round, the size the last plan chose, from the
    # reserve in its random order, less B; it alone certifies.
    purchases = _purchases(workdir)
    keys = [r["key"] for r in purchases]
    assert keys[-2:] == ["certify", "residual"]
    from mcal_jax.profile import THETAS
    from mcal_jax.run import finish, state
    from mcal_jax.run.prepare import prepare

    ctx = prepare(synthetic.get_config("1500"), str(workdir))
    replayed = state.RunState.replay(Workdir(workdir).read_rounds(), ("tiny",), THETAS, 75)
    cert = ledger.bought("certify")[0]
    labeling = ctx.workdir.load_scores(json.loads((workdir / "final.json").read_text())["stage"])
    assert len(cert) == counts.certify == finish.certificate_size(ctx, replayed, labeling) > 0
    assert not np.isin(cert, np.concatenate([train, plan_test])).any()
    np.testing.assert_array_equal(cert, ctx.cert_candidates(len(cert), train))
    assert summary.threshold.tested >= 1 and summary.certify_on == "reserve"
    cost = summary.cost_usd
    assert cost.human_labels == pytest.approx(
        0.04 * (counts.test + counts.train + counts.certify + counts.residual)
    )
    assert cost.human_labels_certify == pytest.approx(0.04 * len(cert))
    assert cost.total == pytest.approx(cost.human_labels + cost.training + cost.scoring)
    assert cost.human_only == pytest.approx(0.04 * n)
    error = summary.error
    assert error.upper_bound <= 0.05
    assert error.upper_bound >= error.estimated
    # Both bounds, whatever the constraint: overall = |S| · subset bound / N.
    assert error.upper_bound_overall == pytest.approx(
        counts.machine * error.upper_bound_machine_subset / n
    )
    labels = np.load(workdir / "labels.npz")
    assert np.all(labels["label"] >= 0) and len(labels["label"]) == n
    assert int(np.sum(labels["source"] == "machine")) == counts.machine
    # labels.csv says the same, an item's index standing for its path, numbers for names.
    header, *rows = (workdir / "labels.csv").read_text().splitlines()
    assert header == "path,label,source,confidence" and len(rows) == n
    assert summary.classes == ("0", "1", "2", "3")
    for i in (0, 77, n - 1):
        path, label, source, confidence = rows[i].split(",")
        assert (path, label, source) == (str(i), str(labels["label"][i]), labels["source"][i])
        assert float(confidence) == pytest.approx(labels["confidence"][i], rel=1e-5)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary.rounds
    first = json.loads(lines[0])
    assert {"train_size", "delta", "cost_star_usd", "b_opt", "theta_star", "fit"} <= set(first)
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0
    fingerprint = json.loads((workdir / "dataset.json").read_text())
    assert fingerprint["num_items"] == n and len(fingerprint["images_sha256"]) == 64


def test_synthetic_classifier_learns_and_machine_labels_are_right(finished):
    workdir, summary = finished
    chance = 1 - 1 / 4  # configs/synthetic.py: four classes
    error_at_theta_1 = [
        c.test_errors[-1] / c.test_counts[-1]
        for r in Workdir(workdir).read_rounds()
        for c in r.candidates.values()
    ]
    assert error_at_theta_1[0] < chance  # from 75 labels
    assert error_at_theta_1[-1] < error_at_theta_1[0] * 2 / 3  # from a few hundred
    # Seeds 0 to 4 machine-label 184 to 563 of the 1,500 items: far from none.
    assert summary.counts.machine > 0.2 * summary.num_items
    # What the run certifies (the `overall` constraint): errors among S, over N, at most ε
    # with probability 1 − α, so one run may break it (this one: 5.13% true against 4.68%
    # certified; the rate over many runs is tests/test_certificate.py's). A certificate that
    # did not look at T_cert would pass items near the model's 17% error among them.
    assert summary.constraint == "overall"
    assert summary.error.upper_bound_overall <= 0.05
    assert summary.error.true_overall < 0.075


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mcal.epsilon", 1.5, "mcal.epsilon=1.5: must be"),
        ("mcal.constraint", "both", "mcal.constraint='both'"),
        ("labeling.service", "-0.1", "labeling.service"),
        ("mcal.plan_test_fraction", 0.6, "take more than half of the 1000 items"),
        ("mcal.plan_test_fraction", 1.5, "mcal.plan_test_fraction=1.5 must lie in (0, 1)"),
        ("mcal.min_plan_test_items", 0, "mcal.min_plan_test_items=0 must be an integer ≥ 1"),
        ("mcal.certify_on", "test", "mcal.certify_on='test': use one of ('reserve', 'plan')"),
        ("mcal.plan_replicates", -2, "mcal.plan_replicates=-2"),
        ("labeling.service", "0", "labeling.service='0'"),
        ("mcal.batch_slack", -0.5, "mcal.batch_slack=-0.5"),
        ("mcal.stability_tolerance", 0.0, "mcal.stability_tolerance=0.0"),
        ("mcal.min_rounds_for_stability", 0, "mcal.min_rounds_for_stability=0"),
        ("mcal.budget_usd", -5.0, "mcal.budget_usd=-5.0"),
        ("mcal.min_delta_fraction", -0.1, "mcal.min_delta_fraction=-0.1"),
        ("mcal.max_rounds", 0, "mcal.max_rounds=0"),
        ("train.learning_rate", -1.0, "train.learning_rate=-1.0"),
        ("cost.mode", "free", "cost.mode='free'"),
        ("final_train.min_steps", -1, "final_train.min_steps=-1 is not valid"),
        ("train.teacher_ensemble", True, "train.teacher_ensemble=True: a round's teacher"),
        ("final_train.teacher_ensemble", True, "needs final_train.semi_supervised=True"),
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
    assert not (tmp_path / "config.json").exists()


def test_unknown_model_is_rejected(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.models = ("resnet9000",)
    with pytest.raises(ValueError, match="resnet9000"):
        run.mcal(config, str(tmp_path))


def test_rerunning_a_finished_run_changes_nothing(finished, tmp_path, workdir_files):
    workdir = _copy(finished, tmp_path)
    before = workdir_files(workdir)
    assert run.mcal(synthetic.get_config("1500"), str(workdir)) == finished[1]
    assert workdir_files(workdir) == before


@pytest.mark.parametrize("cut", ["residual", "outputs", "final", "certify"])
def test_rerunning_a_half_finished_run_gives_the_same_answer(finished, tmp_path, cut):
    """Killed before the residual was bought, after it, before the decision was saved, or
    before T_cert was bought: the rerun buys the same T_cert and decides the same."""
    workdir = _copy(finished, tmp_path)
    labels = np.load(workdir / "labels.npz")
    ledger = workdir / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    if cut in ("residual", "certify"):
        dropped = ('"key":"residual"', '"key":"certify"')[: 1 + (cut == "certify")]
        ledger.write_text("".join(line for line in lines if not any(k in line for k in dropped)))
    if cut == "final":
        (workdir / "final.json").write_text('{"round": 4, "mod')  # torn: decided again
    if cut == "certify":
        os.remove(workdir / "final.json")
    for name in ("labels.npz", "summary.json"):
        os.remove(workdir / name)
    assert run.mcal(synthetic.get_config("1500"), str(workdir)) == finished[1]
    again = np.load(workdir / "labels.npz")
    for name in ("label", "source", "confidence"):
        np.testing.assert_array_equal(labels[name], again[name])
    keys = [r["key"] for r in _purchases(workdir)]
    assert keys.count("residual") == keys.count("certify") == 1
    if cut == "certify":  # the same items bought for T_cert, then the same residual
        assert ledger.read_text().splitlines(keepends=True)[-2:] == lines[-2:]


def test_a_run_cut_between_a_move_and_its_purchase_ends_where_the_whole_run_did(finished, tmp_path):
    """Killed after a batch's items of T were moved to B, before the rest was bought."""
    workdir = _copy(finished, tmp_path)
    ledger = (workdir / "ledger.jsonl").read_text().splitlines(keepends=True)
    position = max(i for i, line in enumerate(ledger) if '"kind":"move"' in line)
    round_index = int(json.loads(ledger[position])["key"].split("/")[0][5:])
    assert f'"key":"round{round_index}/train"' in ledger[position + 1]
    (workdir / "ledger.jsonl").write_text("".join(ledger[: position + 1]))
    rounds = (workdir / "rounds.jsonl").read_text().splitlines(keepends=True)
    (workdir / "rounds.jsonl").write_text("".join(rounds[: round_index - 1]))
    for name in ("final.json", "labels.npz", "summary.json"):
        os.remove(workdir / name)
    again = run.mcal(synthetic.get_config("1500"), str(workdir))
    assert _decided(again) == _decided(finished[1])
    assert [r for r in _ledger(workdir) if r["kind"] != "charge"] == [
        r for r in _ledger(finished[0]) if r["kind"] != "charge"
    ]


def test_torn_round_record_is_run_again(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    rounds = workdir / "rounds.jsonl"
    text = rounds.read_bytes()
    last_line = text.split(b"\n")[-2]
    rounds.write_bytes(text[: len(text) - 1 - len(last_line) // 2])  # half the last line
    os.remove(workdir / "final.json")
    for name in ("labels.npz", "summary.json"):
        os.remove(workdir / name)
    (workdir / "metrics.jsonl").write_text("")
    summary = run.mcal(synthetic.get_config("1500"), str(workdir))
    assert _decided(summary) == _decided(finished[1])
    # The last round was trained again and really charged again, under fresh keys.
    charges = [r["key"] for r in _ledger(workdir) if r["kind"] == "charge"]
    last = summary.rounds
    assert f"round{last}/tiny/training/retry1" in charges
    assert summary.cost_usd.training > finished[1].cost_usd.training
    assert summary.cost_usd.human_labels == finished[1].cost_usd.human_labels
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == last


def test_a_batch_that_takes_most_of_t_plan_leaves_the_rest_to_plan_with(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.min_plan_test_items = 60
        config.mcal.plan_test_fraction = 0.06  # |T_plan| = 60
        config.mcal.delta0_fraction = 0.43  # B0 = 430: round 1 takes 430 of the 510 left
    summary = run.mcal(config, str(tmp_path))
    # The batch is the least confident items outside B, T_plan's included: it takes items
    # of T_plan (moved to B, not bought again) and leaves as many items of U.
    moved = sum(len(r["indices"]) for r in _ledger(tmp_path) if r["kind"] == "move")
    assert 0 < moved < 60
    assert summary.counts.test == 60 - moved
    assert summary.counts.train == 860
    assert summary.rounds == 2
    left = summary.counts
    assert left.machine + left.residual + left.certify == 1000 - 860 - 60 + moved
    assert summary.cost_usd.human_labels == pytest.approx(0.04 * (1000 - summary.counts.machine))


def test_diverged_model_stops_before_planning_and_keeps_paid_labels(tmp_path):
    config = synthetic.get_config("600")
    with config.unlocked():
        config.train.learning_rate = 1e30
        config.train.epochs = 1
        config.train.batch_size = 64
    with pytest.raises(train.DivergedError, match=r"train\.learning_rate"):
        run.mcal(config, str(tmp_path))
    records = Workdir(tmp_path).read_rounds()
    keys = [r["key"] for r in _purchases(tmp_path)]
    # Every label bought is kept; the diverged round recorded nothing and bought nothing.
    assert keys == ["test"] + [f"round{r}/train" for r in range(1, len(records) + 2)]
    assert all(len(r["labels"]) == len(r["indices"]) > 0 for r in _purchases(tmp_path))


def test_a_workdir_of_the_earlier_test_set_design_is_refused_clearly(finished, tmp_path):
    """A run started when one test set both planned and certified cannot be resumed: the
    refusal says why and what to do, before anything is read or bought."""
    workdir = _copy(finished, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    config["mcal"]["test_fraction"] = config["mcal"].pop("plan_test_fraction")
    (workdir / "config.json").write_text(json.dumps(config))
    ledger = (workdir / "ledger.jsonl").read_bytes()
    with pytest.raises(ValueError, match="earlier version of mcal_jax.*new --workdir"):
        run.mcal(synthetic.get_config("1500"), str(workdir))
    assert (workdir / "ledger.jsonl").read_bytes() == ledger


def test_failed_start_leaves_nothing_and_other_data_is_refused(tmp_path):
    workdir = tmp_path / "run"
    config = synthetic.get_config("600")
    missing = tmp_path / "missing.npz"
    with config.unlocked():
        config.data.dataset = f"npz:{missing}"
    with pytest.raises(data.DataError, match="missing.npz"):
        run.mcal(config, str(workdir))
    assert not (workdir / "config.json").exists()
    # The corrected command runs (here: the file now exists).
    pool = data.make_synthetic("n=600,shape=28x28x1,classes=4,seed=0,noise=0.8")
    data.save_npz(missing, pool)
    with config.unlocked():
        config.mcal.max_rounds = 1
    run.mcal(config, str(workdir))
    # Other images under the same path: refused before anything is bought.
    data.save_npz(missing, data.Dataset(pool.images[::-1], pool.labels[::-1], 4, "reversed"))
    bought = _purchases(workdir)
    with pytest.raises(ValueError, match="different dataset .*images_sha256"):
        run.mcal(config, str(workdir))
    assert _purchases(workdir) == bought


def test_candidate_architectures_run_side_by_side_and_are_all_charged(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.models = ("tiny", "small")
        config.mcal.max_rounds = 3
        config.mcal.selection_rounds = 2
    summary = run.mcal(config, str(tmp_path))
    records = Workdir(tmp_path).read_rounds()
    charges = [r for r in _ledger(tmp_path) if r["kind"] == "charge"]
    first_round = {r["details"]["model"] for r in charges if r["key"].startswith("round1/")}
    assert first_round == {"tiny", "small"}  # both candidates trained and paid for
    last = records[-1]
    plans = {name: c.plan for name, c in last.candidates.items()}
    # The lead is the candidate whose plan is cheapest; a kept candidate is alone after.
    assert last.lead == min(plans, key=lambda m: plans[m].cost_star_usd)
    assert summary.model == last.lead
    assert summary.cost_usd.training == pytest.approx(
        sum(r["usd"] for r in charges if r["category"] == "training")
    )


def test_final_classifier_labels_and_a_rerun_neither_trains_nor_pays_again(tmp_path):
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.max_rounds = 2
        config.final_train.min_steps = 200
        config.final_train.horizontal_flip = True
    summary = run.mcal(config, str(tmp_path))
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["stage"] == "final" and (tmp_path / "scores" / "final.npz").exists()
    # It trains on B and T_plan (whose labels the certificate does not need) and scores
    # what is left to label, T_cert's items among them.
    ledger = Ledger(tmp_path / "ledger.jsonl", writer=False)
    scored = np.load(tmp_path / "scores" / "final.npz")["predicted"] >= 0
    labeled = np.concatenate([ledger.bought("train")[0], ledger.bought("test")[0]])
    assert not scored[labeled].any() and scored[ledger.bought("certify")[0]].all()
    assert scored.sum() == 1000 - len(labeled)
    charges = [r for r in _ledger(tmp_path) if r["kind"] == "charge"]
    finals = [r for r in charges if r["key"].startswith("final/")]
    assert [r["key"] for r in finals] == ["final/tiny/training", "final/tiny/scoring"]
    assert finals[0]["details"]["images"] == 200 * 32  # the floor of the final recipe
    assert summary.cost_usd.training == pytest.approx(
        sum(r["usd"] for r in charges if r["category"] == "training")
    )
    os.remove(tmp_path / "final.json")  # killed before the decision was saved
    assert run.mcal(config, str(tmp_path)) == summary
    assert [r for r in _ledger(tmp_path) if r["kind"] == "charge"] == charges


@pytest.fixture(scope="module")
def semi_supervised(tmp_path_factory):
    """(config, workdir, summary) of a run whose rounds after the first also learn the
    previous model's pseudo-labels, and whose final labels are the average softmax of the
    final teacher and student over each image and its mirror."""
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.max_rounds = 3
        config.train.semi_supervised = True
        config.train.epochs, config.train.min_steps = 1, 30  # 30 steps: |B| ≤ 950 < 30 · 32
        config.final_train.min_steps = 100
        config.final_train.test_time_flip = True
        config.final_train.test_time_shift = 1
        config.final_train.teacher_ensemble = True
        config.cost.mode = "per_image_epoch"
    workdir = tmp_path_factory.mktemp("semi_supervised")
    return config, workdir, run.mcal(config, str(workdir))


def test_semi_supervised_rounds_learn_from_the_last_round_and_resume_alike(
    semi_supervised, tmp_path
):
    """Round 1 has no teacher; every later round also fits the previous model's
    pseudo-labels (twice the images per step), the final classifier its own supervised
    teacher's, and a run cut after a round resumes to the same answer."""
    config, finished_dir, summary = semi_supervised
    charges = [r for r in _ledger(finished_dir) if r["kind"] == "charge"]
    images = {r["key"]: r["details"]["images"] for r in charges if r["category"] == "training"}
    assert images["round1/tiny/training"] == 30 * 32
    assert images["round2/tiny/training"] == images["round3/tiny/training"] == 30 * 32 * 2
    # The final recipe inherits semi_supervised: a supervised teacher, then its student.
    assert images["final_teacher/tiny/training"] == 100 * 32
    assert images["final/tiny/training"] == 100 * 32 * 2
    # Cut after round 2: the rerun trains round 3 again from round 2's saved scores.
    workdir = tmp_path / "cut"
    shutil.copytree(finished_dir, workdir)
    rounds = workdir / "rounds.jsonl"
    lines = rounds.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    rounds.write_text("".join(lines[:2]))
    for name in ("final.json", "labels.npz", "summary.json", "scores/final.npz"):
        os.remove(workdir / name)
    again = run.mcal(config, str(workdir))
    assert _decided(again) == _decided(summary)


def test_the_final_teacher_and_student_label_together_over_ten_views(semi_supervised):
    """With teacher_ensemble, test_time_flip and test_time_shift the final scores are the
    average softmax of the two saved final models over each image moved 0 or 1 pixel and
    mirrored, not the student's; the teacher scored its pseudo-labels without the moves."""
    import orbax.checkpoint as ocp

    from mcal_jax import pool as pool_lib
    from mcal_jax import scoring

    config, workdir, _ = semi_supervised
    saved = np.load(workdir / "scores" / "final.npz")
    scored = saved["predicted"] >= 0
    # Twenty forward passes per item (two models, ten views), each priced; the teacher's
    # own scoring two (its mirrors).
    charges = {r["key"]: r for r in _ledger(workdir) if r["kind"] == "charge"}
    per_pass = config.cost.usd_per_image_epoch.tiny * config.cost.scoring_fraction_of_image_epoch
    assert charges["final/tiny/scoring"]["usd"] == pytest.approx(20 * scored.sum() * per_pass)
    teacher_usd = charges["final_teacher/tiny/scoring"]["usd"]
    assert teacher_usd == pytest.approx(2 * scored.sum() * per_pass)
    with ocp.StandardCheckpointer() as checkpointer:
        student, teacher = (
            checkpointer.restore(str(workdir / "checkpoints" / f"{stage}_tiny"))
            for stage in ("final", "final_teacher")
        )
    dataset = data.load_dataset(config.data.dataset, image_shape=config.data.image_shape)
    pool = pool_lib.upload(dataset, parallel.make_mesh(1))
    scorer = scoring.Scorer("tiny", pool, batch_size=256, test_time_flip=True)
    images = np.asarray(pool.images)[scored]
    moved = [np.asarray(scoring.shifted(images, o)) for o in scoring.view_offsets(1)]
    views = [pool_lib.normalize(m, pool.mean, pool.std) for m in moved]
    probs = np.mean(
        [
            jax.nn.softmax(scorer.model.apply(v, view, train=False))
            for v in (student, teacher)
            for x in views
            for view in (x, x[:, :, ::-1])
        ],
        axis=0,
    )
    top2 = np.sort(probs, axis=1)[:, -2:]
    np.testing.assert_allclose(saved["confidence"][scored], top2[:, 1] - top2[:, 0], atol=1e-5)
    np.testing.assert_array_equal(saved["predicted"][scored], probs.argmax(1))
    alone = scoring.Scorer("tiny", pool, batch_size=256).score(student, np.flatnonzero(scored))
    assert np.abs(alone.confidence[scored] - saved["confidence"][scored]).max() > 1e-3
