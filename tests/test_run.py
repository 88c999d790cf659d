"""The MCAL run end to end: outputs, invalid settings, resuming after a kill, rerunning a
finished or damaged workdir, an exhausted pool, a diverged model, and the data check."""

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


def test_killed_run_resumes_without_rebuying_and_matches_uninterrupted(tmp_path):
    reference = _launch(tmp_path / "reference")
    output = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, output

    killed_dir = tmp_path / "killed"
    process = _launch(killed_dir)
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


def test_outputs_and_summary(finished):
    workdir, summary = finished
    n = summary["num_items"]
    assert n == 1500
    counts = summary["counts"]
    assert sum(counts.values()) == n
    # Active learning chose some items of T: they left T for B with the labels T bought.
    moved = [r["indices"] for r in _ledger(workdir) if r["kind"] == "move"]
    assert moved and all(r["purpose"] == "train" for r in _ledger(workdir) if r["kind"] == "move")
    assert counts["test"] == 150 - sum(map(len, moved))
    train = Ledger(workdir / "ledger.jsonl", writer=False).bought("train")[0]
    assert np.isin(np.concatenate(moved), train).all() and len(train) == counts["train"]
    cost = summary["cost_usd"]
    assert cost["human_labels"] == pytest.approx(
        0.04 * (counts["test"] + counts["train"] + counts["residual"])
    )
    assert cost["total"] == pytest.approx(cost["human_labels"] + cost["training"] + cost["scoring"])
    assert cost["human_only"] == pytest.approx(0.04 * n)
    error = summary["error"]
    assert error["upper_bound"] <= 0.05
    assert error["upper_bound"] >= error["estimated"]
    # Both bounds, whatever the constraint: overall = |S| · subset bound / N.
    assert error["upper_bound_overall"] == pytest.approx(
        counts["machine"] * error["upper_bound_machine_subset"] / n
    )
    labels = np.load(workdir / "labels.npz")
    assert np.all(labels["label"] >= 0) and len(labels["label"]) == n
    assert int(np.sum(labels["source"] == "machine")) == counts["machine"]
    # labels.csv says the same, an item's index standing for its path, numbers for names.
    header, *rows = (workdir / "labels.csv").read_text().splitlines()
    assert header == "path,label,source,confidence" and len(rows) == n
    assert summary["classes"] == ["0", "1", "2", "3"]
    for i in (0, 77, n - 1):
        path, label, source, confidence = rows[i].split(",")
        assert (path, label, source) == (str(i), str(labels["label"][i]), labels["source"][i])
        assert float(confidence) == pytest.approx(labels["confidence"][i], rel=1e-5)
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["rounds"]
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
    # Seeds 0 to 4 machine-label 248 to 747 of the 1,500 items: far from none.
    assert summary["counts"]["machine"] > 0.2 * summary["num_items"]
    # What the run certifies (the `overall` constraint): errors among S, over N, below ε.
    assert summary["constraint"] == "overall"
    assert summary["error"]["true_overall"] < 0.05


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mcal.epsilon", 1.5, "mcal.epsilon=1.5: must be"),
        ("mcal.constraint", "both", "mcal.constraint='both'"),
        ("labeling.service", "-0.1", "labeling.service"),
        ("mcal.test_fraction", 0.999, "test_fraction + mcal.delta0_fraction must be below 1"),
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


@pytest.mark.parametrize("cut", ["residual", "outputs", "final"])
def test_rerunning_a_half_finished_run_gives_the_same_answer(finished, tmp_path, cut):
    """Killed before the residual was bought, after it, or before the decision was saved."""
    workdir = _copy(finished, tmp_path)
    labels = np.load(workdir / "labels.npz")
    if cut == "residual":
        ledger = workdir / "ledger.jsonl"
        lines = ledger.read_text().splitlines(keepends=True)
        ledger.write_text("".join(line for line in lines if '"key":"residual"' not in line))
    if cut == "final":
        (workdir / "final.json").write_text('{"round": 4, "mod')  # torn: decided again
    for name in ("labels.npz", "summary.json"):
        os.remove(workdir / name)
    assert run.mcal(synthetic.get_config("1500"), str(workdir)) == finished[1]
    again = np.load(workdir / "labels.npz")
    for name in ("label", "source", "confidence"):
        np.testing.assert_array_equal(labels[name], again[name])
    keys = [r["key"] for r in _purchases(workdir)]
    assert keys.count("residual") == 1


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
    for field in ("counts", "error", "threshold", "rounds", "stop_reason"):
        assert again[field] == finished[1][field]
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
    for field in ("counts", "error", "threshold", "rounds", "model", "stop_reason"):
        assert summary[field] == finished[1][field]
    # The last round was trained again and really charged again, under fresh keys.
    charges = [r["key"] for r in _ledger(workdir) if r["kind"] == "charge"]
    last = summary["rounds"]
    assert f"round{last}/tiny/training/retry1" in charges
    assert summary["cost_usd"]["training"] > finished[1]["cost_usd"]["training"]
    assert summary["cost_usd"]["human_labels"] == finished[1]["cost_usd"]["human_labels"]
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == last


def test_a_batch_that_takes_most_of_t_leaves_the_rest_certified_by_what_is_left(tmp_path):
    config = synthetic.get_config("600")
    with config.unlocked():
        config.mcal.delta0_fraction = 0.45  # B0 = 270: round 1 takes 270 of the 330 left
    summary = run.mcal(config, str(tmp_path))
    # The batch is the least confident items outside B, T's included: it takes items of
    # T (moved to B, not bought again) and leaves as many items of U.
    moved = sum(len(r["indices"]) for r in _ledger(tmp_path) if r["kind"] == "move")
    assert 0 < moved < 60
    assert summary["counts"]["test"] == 60 - moved
    assert summary["counts"]["train"] == 540
    assert summary["rounds"] == 2
    assert summary["stop_reason"].startswith(f"the latest model already certifies all {moved}")
    assert summary["counts"]["machine"] + summary["counts"]["residual"] == moved
    assert summary["cost_usd"]["human_labels"] == pytest.approx(
        0.04 * (600 - summary["counts"]["machine"])
    )


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
    assert summary["model"] == last.lead
    assert summary["cost_usd"]["training"] == pytest.approx(
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
    charges = [r for r in _ledger(tmp_path) if r["kind"] == "charge"]
    finals = [r for r in charges if r["key"].startswith("final/")]
    assert [r["key"] for r in finals] == ["final/tiny/training", "final/tiny/scoring"]
    assert finals[0]["details"]["images"] == 200 * 32  # the floor of the final recipe
    assert summary["cost_usd"]["training"] == pytest.approx(
        sum(r["usd"] for r in charges if r["category"] == "training")
    )
    os.remove(tmp_path / "final.json")  # killed before the decision was saved
    assert run.mcal(config, str(tmp_path)) == summary
    assert [r for r in _ledger(tmp_path) if r["kind"] == "charge"] == charges


def test_semi_supervised_rounds_learn_from_the_last_round_and_resume_alike(tmp_path):
    """Round 1 has no teacher; every later round also fits the previous model's
    pseudo-labels (twice the images per step), the final classifier its own supervised
    teacher's, and a run cut after a round resumes to the same answer."""
    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.max_rounds = 3
        config.train.semi_supervised = True
        config.train.epochs, config.train.min_steps = 1, 30  # 30 steps: |B| ≤ 950 < 30 · 32
        config.final_train.min_steps = 100
    summary = run.mcal(config, str(tmp_path / "whole"))
    charges = [r for r in _ledger(tmp_path / "whole") if r["kind"] == "charge"]
    images = {r["key"]: r["details"]["images"] for r in charges if r["category"] == "training"}
    assert images["round1/tiny/training"] == 30 * 32
    assert images["round2/tiny/training"] == images["round3/tiny/training"] == 30 * 32 * 2
    # The final recipe inherits semi_supervised: a supervised teacher, then its student.
    assert images["final_teacher/tiny/training"] == 100 * 32
    assert images["final/tiny/training"] == 100 * 32 * 2
    # Cut after round 2: the rerun trains round 3 again from round 2's saved scores.
    rounds = tmp_path / "whole" / "rounds.jsonl"
    lines = rounds.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    rounds.write_text("".join(lines[:2]))
    for name in ("final.json", "labels.npz", "summary.json", "scores/final.npz"):
        os.remove(tmp_path / "whole" / name)
    again = run.mcal(config, str(tmp_path / "whole"))
    for field in ("counts", "error", "threshold", "rounds", "stop_reason"):
        assert again[field] == summary[field]


def test_the_final_teacher_and_student_label_together_with_mirrors(tmp_path):
    """With teacher_ensemble and test_time_flip the final scores are the average softmax
    of the two saved final models over each image and its mirror, not the student's."""
    import orbax.checkpoint as ocp

    from mcal_jax import pool as pool_lib
    from mcal_jax import scoring

    config = synthetic.get_config("1000")
    with config.unlocked():
        config.mcal.max_rounds = 2
        config.final_train.min_steps = 60
        config.final_train.semi_supervised = True
        config.final_train.test_time_flip = True
        config.final_train.teacher_ensemble = True
        config.cost.mode = "per_image_epoch"
    run.mcal(config, str(tmp_path))
    saved = np.load(tmp_path / "scores" / "final.npz")
    scored = saved["predicted"] >= 0
    # Four forward passes per item (two models, two views), each priced.
    [charge] = [r for r in _ledger(tmp_path) if r["key"] == "final/tiny/scoring"]
    per_pass = config.cost.usd_per_image_epoch.tiny * config.cost.scoring_fraction_of_image_epoch
    assert charge["usd"] == pytest.approx(4 * scored.sum() * per_pass)
    with ocp.StandardCheckpointer() as checkpointer:
        student, teacher = (
            checkpointer.restore(str(tmp_path / "checkpoints" / f"{stage}_tiny"))
            for stage in ("final", "final_teacher")
        )
    dataset = data.load_dataset(config.data.dataset, image_shape=config.data.image_shape)
    pool = pool_lib.upload(dataset, parallel.make_mesh(1))
    scorer = scoring.Scorer("tiny", pool, batch_size=256, test_time_flip=True)
    x = pool_lib.normalize(np.asarray(pool.images)[scored], pool.mean, pool.std)
    probs = np.mean(
        [
            jax.nn.softmax(scorer.model.apply(v, view, train=False))
            for v in (student, teacher)
            for view in (x, x[:, :, ::-1])
        ],
        axis=0,
    )
    top2 = np.sort(probs, axis=1)[:, -2:]
    np.testing.assert_allclose(saved["confidence"][scored], top2[:, 1] - top2[:, 0], atol=1e-5)
    np.testing.assert_array_equal(saved["predicted"][scored], probs.argmax(1))
    alone = scoring.Scorer("tiny", pool, batch_size=256).score(student, np.flatnonzero(scored))
    assert np.abs(alone.confidence[scored] - saved["confidence"][scored]).max() > 1e-3


def _staged_config():
    config = synthetic.get_config("1500")
    with config.unlocked():
        config.mcal.test_fraction = 0.1
        config.mcal.test_stages = (0.02, 0.05)  # |T| may be 30, 75 or 150
    return config


def test_staged_t_starts_small_grows_from_its_reserve_and_resumes(tmp_path):
    from mcal_jax.run.prepare import prepare

    config = _staged_config()
    summary = run.mcal(config, str(tmp_path / "run"))
    ctx = prepare(config, str(tmp_path / "run"))
    assert ctx.settings.confidence == pytest.approx(1 - 0.05 / 3)  # α over 3 sizes
    purchases = _purchases(tmp_path / "run")
    tests = [r for r in purchases if r["purpose"] == "test"]
    assert tests[0]["key"] == "test" and len(tests[0]["indices"]) == 30
    # On this pool the plan grows T (to the last stage), from the reserve in its order.
    assert len(tests) == 2 and re.fullmatch(r"round\d+/test", tests[1]["key"])
    bought = np.concatenate([r["indices"] for r in tests])
    # Active learning chooses from every item outside B, the reserve's included: the
    # reserve items B took before T grew to them are not bought for T, and the items of T
    # it chose moved to B. T and B never share an item, and T is the rest of the stage.
    train_items = ctx.ledger.bought("train")[0]
    test_items = ctx.ledger.bought("test")[0]
    stage = ctx.reserve[:150]
    np.testing.assert_array_equal(
        np.sort(np.concatenate([bought, np.setdiff1d(np.intersect1d(train_items, stage), bought)])),
        np.sort(stage),
    )
    assert not np.isin(test_items, train_items).any()
    np.testing.assert_array_equal(np.sort(test_items), np.setdiff1d(stage, train_items))
    assert summary["counts"]["test"] == len(test_items)
    assert sum(summary["counts"].values()) == 1500
    records = Workdir(tmp_path / "run").read_rounds()
    grew = int(tests[1]["key"].split("/")[0][5:])
    before, after = [r.candidates[r.lead].test_size for r in records][grew - 1 : grew + 1]
    assert 0 < before <= 30 < after <= 150  # less what active learning moved to B
    # Cut after the round that grew T, before its test labels were bought: the rerun buys
    # them and ends where the whole run did.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "run", cut)
    lines = (cut / "rounds.jsonl").read_text().splitlines(keepends=True)
    (cut / "rounds.jsonl").write_text("".join(lines[:grew]))
    ledger = (cut / "ledger.jsonl").read_text().splitlines(keepends=True)
    position = next(i for i, line in enumerate(ledger) if f'"key":"round{grew}/test"' in line)
    (cut / "ledger.jsonl").write_text("".join(ledger[:position]))
    for name in ("final.json", "labels.npz", "summary.json"):
        if (cut / name).exists():
            os.remove(cut / name)
    again = run.mcal(config, str(cut))
    for field in ("counts", "error", "threshold", "rounds", "stop_reason"):
        assert again[field] == summary[field]
