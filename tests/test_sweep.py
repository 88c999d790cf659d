"""Sweeps: enumeration, shards, overrides, point names, skipping and resuming, the
per-device scheduler, the config files' sweeps, and one real sweep of two MCAL runs."""

import json
import os
import subprocess
import sys

import pytest
from summaries import summary_json

from configs import cifar10, cifar100, fashion_mnist, synthetic
from mcal_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Enumeration.


def test_product_zip_times_seeds_enumerate_every_combination_in_order():
    grid = sweep.product({"labeling.service": ["amazon", "satyam"], "mcal.epsilon": [0.05, 0.1]})
    assert grid == [
        {"labeling.service": "amazon", "mcal.epsilon": 0.05},
        {"labeling.service": "amazon", "mcal.epsilon": 0.1},
        {"labeling.service": "satyam", "mcal.epsilon": 0.05},
        {"labeling.service": "satyam", "mcal.epsilon": 0.1},
    ]
    paired = sweep.zip_({"models": [("tiny",), ("small",)]}, score_batch_size=[64, 128])
    assert paired == [
        {"models": ("tiny",), "score_batch_size": 64},
        {"models": ("small",), "score_batch_size": 128},
    ]
    points = sweep.seeds(sweep.times(grid, paired), [0, 1, 2])
    assert len(points) == 4 * 2 * 3
    assert points[0] == {
        "labeling.service": "amazon", "mcal.epsilon": 0.05, "models": ("tiny",),
        "score_batch_size": 64, "seed": 0,
    }  # fmt: skip
    assert [p["seed"] for p in points[:4]] == [0, 1, 2, 0]  # seeds vary fastest
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)


def test_enumeration_rejects_malformed_axes():
    with pytest.raises(ValueError, match="different lengths"):
        sweep.zip_(a=[1, 2], b=[1])
    with pytest.raises(ValueError, match="seed"):
        sweep.times([{"seed": 0}], [{"seed": 1}])
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.product({"labeling.service": "amazon"})  # a string, not a list of values
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.product(seed=[])


# Shards.


@pytest.mark.parametrize("num_points", [0, 1, 5, 36, 37])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 50])
def test_shards_partition_the_points_exactly(num_points, count):
    points = [{"seed": i} for i in range(num_points)]
    shards = [sweep.shard(points, i, count) for i in range(count)]
    seen = [p["seed"] for s in shards for p in s]
    assert sorted(seen) == list(range(num_points))  # none missing, none twice
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_rejects_an_index_outside_the_count():
    for index, count in [(3, 3), (-1, 3), (0, 0)]:
        with pytest.raises(ValueError, match="0 <= index < count"):
            sweep.shard([1, 2, 3], index, count)


def test_parse_shard_from_flag_and_from_slurm_array():
    assert sweep.parse_shard(None, {}) == (0, 1)
    assert sweep.parse_shard("2/5", {}) == (2, 5)
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert sweep.parse_shard(None, {**slurm, "SLURM_ARRAY_TASK_MIN": "3"}) == (2, 4)
    assert sweep.parse_shard("1/2", {**slurm, "SLURM_ARRAY_TASK_MIN": "3"}) == (1, 2)  # flag wins
    stepped = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert sweep.parse_shard(None, {**stepped, "SLURM_ARRAY_TASK_STEP": "4"}) == (3, 4)
    for bad in ["5/5", "3", "a/b", "-1/3", "1/0"]:
        with pytest.raises(ValueError, match="--shard"):
            sweep.parse_shard(bad, {})
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_COUNT"):
        sweep.parse_shard(None, {"SLURM_ARRAY_TASK_ID": "0"})
    with pytest.raises(ValueError, match="regular array"):
        sweep.parse_shard(None, slurm)  # task 5 of an array 0..3


# Overrides and names.


def test_apply_overrides_sets_nested_fields_on_a_locked_copy():
    base = synthetic.get_config("")
    point = {"labeling.service": "satyam", "mcal.epsilon": 0.1, "models": ["small"], "seed": 3}
    config = sweep.apply_overrides(base, point)
    assert (config.labeling.service, config.mcal.epsilon, config.seed) == ("satyam", 0.1, 3)
    assert config.models == ("small",)  # a list sets the tuple field as a tuple
    assert (base.labeling.service, base.mcal.epsilon, base.seed) == ("amazon", 0.05, 0)
    with pytest.raises(AttributeError):
        config.new_field = 1  # still locked


def test_apply_overrides_rejects_typos_and_wrong_types_naming_the_key():
    base = synthetic.get_config("")
    with pytest.raises(KeyError, match=r"mcal\.epsilno.*'epsilno'.*'epsilon'"):
        sweep.apply_overrides(base, {"mcal.epsilno": 0.1})
    with pytest.raises(KeyError, match="'mcall'"):
        sweep.apply_overrides(base, {"mcall.epsilon": 0.1})
    with pytest.raises(KeyError, match="seed has no field 'x'"):
        sweep.apply_overrides(base, {"seed.x": 1})
    with pytest.raises(TypeError, match="mcal.epsilon='high'"):
        sweep.apply_overrides(base, {"mcal.epsilon": "high"})


def test_point_names_are_readable_stable_and_unique():
    point = {"seed": 0, "mcal.epsilon": 0.05, "labeling.service": "amazon"}
    name = sweep.point_name(point)
    assert name == "labeling.service=amazon,mcal.epsilon=0.05,seed=0"
    assert sweep.point_name(dict(reversed(list(point.items())))) == name  # key order
    assert sweep.point_name({"models": ("cnn18", "resnet20")}) == "models=cnn18+resnet20"
    assert sweep.point_name({}) == "base"
    # Values that are not filesystem-safe or read alike get a hash of the exact point.
    odd = [{"data.dataset": "synthetic:n=10"}, {"data.dataset": "synthetic_n_10"},
           {"data.dataset": "a/b"}, {"data.dataset": "a_b"}, {"models": ("a+b",)},
           {"models": ("a", "b")}]  # fmt: skip
    names = [sweep.point_name(p) for p in odd]
    assert len(set(names)) == len(names)
    assert all("/" not in n and ":" not in n and " " not in n for n in names)
    long = {f"mcal.field_{i}": 0.123456789 for i in range(20)}
    assert len(sweep.point_name(long)) <= sweep.MAX_NAME_CHARS + 11
    assert sweep.point_name(long) != sweep.point_name({**long, "mcal.field_19": 0.5})
    with pytest.raises(ValueError, match="share the folder"):
        sweep.check_unique_names([{"mcal.epsilon": 0.1}, {"mcal.epsilon": "0.1"}])


# The config files' sweeps.


@pytest.mark.parametrize("module", [fashion_mnist, cifar10, cifar100])
def test_paper_sweeps_cover_service_epsilon_model_and_seeds(module):
    points = module.sweep("")
    assert len(points) == 2 * 2 * 3 * 3
    assert {(p["labeling.service"], p["mcal.epsilon"], p["models"], p["seed"]) for p in points} == {
        (s, e, m, seed)
        for s in ("amazon", "satyam")
        for e in (0.05, 0.1)
        for m in (("cnn18",), ("resnet20",), ("resnet56",))
        for seed in (0, 1, 2)
    }
    assert all(p["baselines.run"] is True for p in points)  # every point has its AL(δ) curve
    base = module.get_config("")
    configs = [sweep.apply_overrides(base, p) for p in points]  # every field exists
    assert configs[0].baselines.delta_fractions == (0.01, 0.02, 0.05, 0.1, 0.2)
    assert len(set(sweep.check_unique_names(points))) == 36


@pytest.mark.parametrize("module", [fashion_mnist, cifar10, cifar100, synthetic])
def test_cpu_sweeps_are_small(module):
    arg = "" if module is synthetic else "cpu"
    points = module.sweep(arg)
    base = module.get_config(arg)
    configs = [sweep.apply_overrides(base, p) for p in points]
    if module is synthetic:
        assert len(points) == 8
        assert {c.labeling.service for c in configs} == {"amazon", "satyam"}
        assert {c.seed for c in configs} == {0, 1}
    else:  # the CPU demo over three seeds, for a mean ± std
        assert [c.seed for c in configs] == [0, 1, 2]
        assert {c.labeling.service for c in configs} == {"amazon"}
    assert all(c.num_devices == 1 and c.models[0] in ("tiny", "small") for c in configs)


def test_ablation_sweep_prices_the_sealed_certificate_over_three_seeds():
    """The CPU demo certified on the labels its rounds read (T_plan), then on T_cert: the
    same runs but for the certificate, three seeds each."""
    points = fashion_mnist.sweep("cpu,ablation")
    base = fashion_mnist.get_config("cpu,ablation")
    configs = [sweep.apply_overrides(base, p) for p in points]
    cells = [(c.mcal.certify_on, c.seed) for c in configs]
    assert len(set(cells)) == len(points) == 6
    assert [c for c, _ in cells[::3]] == ["plan", "reserve"]
    current = fashion_mnist.get_config("cpu")
    assert current.mcal.certify_on == "reserve"  # the demo's own, last
    for c in configs:  # otherwise the demo's settings
        assert (c.train.min_steps, c.mcal.max_rounds) == (
            current.train.min_steps,
            current.mcal.max_rounds,
        )
        assert c.final_train.test_time_flip and c.final_train.test_time_shift == 1
    with pytest.raises(ValueError, match="add `cpu`"):
        fashion_mnist.sweep("ablation")


def test_cifar_configs_use_the_papers_settings():
    for module, dataset in [(cifar10, "tfds:cifar10"), (cifar100, "tfds:cifar100")]:
        config = module.get_config("")
        assert config.data.dataset == dataset
        assert config.models == ("resnet20",)
        assert (config.train.horizontal_flip, config.train.crop_padding) == (True, 4)
        assert config.train.epochs == 200
        with pytest.raises(ValueError, match="unknown arguments"):
            module.get_config("cpux")


# Running: skipping, resuming, failures, shards, the device scheduler.


def _fake_runner(calls):
    def runner(config, workdir):
        calls.append((workdir, config.seed, config.labeling.service))
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary_json(total=float(config.seed)), f)
        return {}

    return runner


def _points():
    return sweep.seeds(sweep.product({"labeling.service": ["amazon", "satyam"]}), [0, 1, 2])


def test_run_sweep_runs_each_point_once_and_a_rerun_skips_finished_points(tmp_path):
    base, points, calls = synthetic.get_config(""), _points(), []
    results = sweep.run_sweep(base, points, str(tmp_path), runner=_fake_runner(calls))
    assert [r["status"] for r in results] == ["finished"] * 6
    assert sorted((seed, service) for _, seed, service in calls) == sorted(
        (p["seed"], p["labeling.service"]) for p in points
    )  # each point ran once, with its own overrides
    assert {w for w, _, _ in calls} == {str(tmp_path / sweep.point_name(p)) for p in points}
    listing = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [e["name"] for e in listing] == [sweep.point_name(p) for p in points]

    results = sweep.run_sweep(base, points, str(tmp_path), runner=_fake_runner(calls))
    assert len(calls) == 6  # nothing ran again
    assert [r["status"] for r in results] == ["skipped"] * 6
    assert [r["summary"].cost_usd.total for r in results] == [0, 1, 2] * 2


def test_a_point_killed_halfway_is_run_again_and_failures_do_not_stop_the_sweep(tmp_path):
    base, points, calls = synthetic.get_config(""), _points(), []
    sweep.run_sweep(base, points, str(tmp_path), runner=_fake_runner(calls))
    halfway = tmp_path / sweep.point_name(points[4])
    os.remove(halfway / "summary.json")  # a run killed before it finished
    results = sweep.run_sweep(base, points, str(tmp_path), runner=_fake_runner(calls))
    assert len(calls) == 7 and calls[-1][0] == str(halfway)
    assert [r["status"] for r in results] == ["skipped"] * 4 + ["finished", "skipped"]

    def flaky(config, workdir):
        if config.seed == 1:
            raise RuntimeError("out of memory")
        return _fake_runner(calls)(config, workdir)

    results = sweep.run_sweep(base, points, str(tmp_path / "new"), runner=flaky)
    assert [r["status"] for r in results] == ["finished", "failed", "finished"] * 2
    assert "out of memory" in results[1]["error"]


def test_shards_of_a_sweep_together_run_every_point_once(tmp_path):
    base, points, calls = synthetic.get_config(""), _points(), []
    for index in range(4):
        sweep.run_sweep(base, points, str(tmp_path), shard=(index, 4), runner=_fake_runner(calls))
    assert sorted(w for w, _, _ in calls) == sorted(
        str(tmp_path / sweep.point_name(p)) for p in points
    )


def test_run_sweep_rejects_a_typo_before_running_anything(tmp_path):
    calls = []
    points = [{"seed": 0}, {"mcal.epsilno": 0.1}]
    with pytest.raises(KeyError, match="epsilno"):
        sweep.run_sweep(synthetic.get_config(""), points, str(tmp_path), runner=_fake_runner(calls))
    assert calls == []


_WORKER = """
import json, os, sys, time
start = time.time()
time.sleep(0.3)
if sys.argv[2] == "fail":
    sys.exit(3)
with open(os.path.join(sys.argv[1], "worker.json"), "w") as f:
    json.dump({"device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start,
               "end": time.time()}, f)
with open(os.path.join(sys.argv[1], "summary.json"), "w") as f:
    f.write(sys.argv[3])
"""


def test_device_scheduler_runs_one_point_per_device_at_a_time(tmp_path):
    points = [{"seed": s} for s in range(5)]
    names = [sweep.point_name(p) for p in points]

    def command(name):
        verdict = "fail" if name == names[3] else "ok"
        summary = json.dumps(summary_json())
        return [sys.executable, "-c", _WORKER, str(tmp_path / name), verdict, summary]

    results = sweep.run_sweep(
        synthetic.get_config(""), points, str(tmp_path), devices=["0", "1,2"], point_command=command
    )
    assert [r["status"] for r in results] == ["finished"] * 3 + ["failed", "finished"]
    assert "exit code 3" in results[3]["error"]
    runs = [
        json.loads((tmp_path / r["name"] / "worker.json").read_text())
        for r in results
        if r["status"] == "finished"
    ]
    assert {r["device"] for r in runs} == {"0", "1,2"}  # both slots used, as named
    for device in ("0", "1,2"):
        spans = sorted((r["start"], r["end"]) for r in runs if r["device"] == device)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no overlap


def test_device_slots_group_the_visible_devices():
    assert sweep.device_slots(4, 1) == ["0", "1", "2", "3"]
    assert sweep.device_slots(4, 2) == ["0,1", "2,3"]
    assert sweep.device_slots(5, 2) == ["0,1", "2,3"]
    assert sweep.device_slots(3, 1, visible="2,5,7") == ["2", "5", "7"]
    assert sweep.device_slots(4, 0) is None  # each point takes every device
    assert sweep.device_slots(1, 1) is None
    assert sweep.device_slots(3, 2) is None


def test_launcher_dry_run_prints_the_shard(tmp_path):
    command = [
        sys.executable, "-m", "launch.sweep", "--config=configs/synthetic.py",
        f"--workdir={tmp_path}", "--shard=1/3", "--dry_run",
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = [sweep.point_name(p) for p in synthetic.sweep("")]
    assert out.splitlines()[0] == "8 points, shard 1/3 holds 3:"
    assert [line.split()[1] for line in out.splitlines()[1:]] == names[1::3]
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_dry_run_lists_the_shard_with_each_points_state_and_writes_nothing(tmp_path, capsys):
    points = synthetic.sweep("")
    names = [sweep.point_name(p) for p in points]
    (tmp_path / names[0]).mkdir()  # killed halfway
    (tmp_path / names[3]).mkdir()
    (tmp_path / names[3] / "summary.json").write_text("{}")  # finished
    results = sweep.run_config_sweep(
        synthetic.get_config(""), "configs/synthetic.py", str(tmp_path), shard="0/3", dry_run=True
    )
    assert results is None
    lines = capsys.readouterr().out.splitlines()
    assert lines == sweep.dry_run_lines(points, str(tmp_path), (0, 3))
    assert lines[0] == "8 points, shard 0/3 holds 3:"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["[partial]", names[0]], ["[finished]", names[3]], ["[new]", names[6]],
    ]  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == sorted([names[0], names[3]])


def test_point_argv_drops_the_shard_and_dry_run_and_names_the_point():
    argv = [
        "launch/sweep.py", "--config=configs/synthetic.py", "--shard", "1/4", "--dry_run",
        "--workdir=/tmp/s", "--point=old", "--config.seed=3", "--nodry_run", "--shard=2/4",
    ]  # fmt: skip
    assert sweep.point_argv(argv, "seed=0") == [
        sys.executable, "-m", "launch.sweep", "--config=configs/synthetic.py",
        "--workdir=/tmp/s", "--config.seed=3", "--point=seed=0",
    ]  # fmt: skip


def test_real_sweep_of_two_synthetic_runs_then_skips_them(tmp_path):
    base = sweep.apply_overrides(synthetic.get_config("1000"), {"mcal.max_rounds": 2})
    points = sweep.seeds([{"labeling.service": "satyam"}], [0, 1])
    results = sweep.run_sweep(base, points, str(tmp_path))
    assert [r["status"] for r in results] == ["finished", "finished"]
    for r, seed in zip(results, [0, 1], strict=True):
        with open(os.path.join(r["workdir"], "config.json")) as f:
            saved = json.load(f)
        assert (saved["seed"], saved["labeling"]["service"], saved["mcal"]["max_rounds"]) == (
            seed, "satyam", 2,
        )  # fmt: skip
        assert r["summary"].num_items == 1000
        assert os.path.exists(os.path.join(r["workdir"], "labels.npz"))
    assert [r["status"] for r in sweep.run_sweep(base, points, str(tmp_path))] == ["skipped"] * 2
