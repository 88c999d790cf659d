"""The training-cost benchmark: every number is there, finite, and follows from the others."""

import json
import math
import sys
import types

import jax
import pytest
from absl.testing import flagsaver

from benchmarks import train_cost as bench
from mcal_jax import costs, models
from mcal_jax import train as train_lib

# Forward multiply-adds of `tiny` on one 28×28×1 image: stem 784·9·1·4; stage 1 (28×28,
# 4→4) 2·784·9·16; stage 2 (14×14, 4→8, 8→8) 196·9·(32 + 64); stage 3 (7×7, 8→16, 16→16)
# 49·9·(128 + 256); head 16·10. A training step costs about 3 forwards (forward, and the
# backward's two products per layer).
TINY_FORWARD_FLOPS = 2 * (784 * 9 * 4 + 2 * 784 * 9 * 16 + 196 * 9 * 96 + 49 * 9 * 384 + 160)


@pytest.fixture(scope="module")
def record():
    # conftest gives 8 CPU devices: 256 items in global batches of 64 is 4 steps.
    return bench.measure("tiny", 64, train_images=256, epochs=1, image_shape=(28, 28, 1), repeats=1)


def test_every_required_number_is_there_positive_and_finite(record):
    for key in bench.REQUIRED_KEYS:
        assert key in record, key
    assert (record["model"], record["batch_size"]) == ("tiny", 64)
    assert record["device"] == jax.devices()[0].device_kind and record["platform"] == "cpu"
    for key in bench.REQUIRED_KEYS[3:]:
        value = record[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert 0 < record["mfu"] < 1
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_costs_follow_from_the_timings(record):
    assert record["num_devices"] == 8 and record["images_per_training"] == 4 * 64
    assert record["compute_dtype"] == "float32"  # the CPU default
    assert record["train_images_per_s"] == pytest.approx(256 / record["train_seconds"])
    assert record["score_images_per_s"] == pytest.approx(256 / record["score_seconds"])
    # Device seconds are wall seconds × 8 devices, as the ledger bills them.
    assert record["device_seconds_per_image_epoch"] == pytest.approx(
        8 / record["train_images_per_s"]
    )
    assert record["usd_per_device_hour"] == 0.10  # mcal_jax.costs' CPU price
    assert record["usd_per_image"] == pytest.approx(
        record["device_seconds_per_image_epoch"] * 200 * 0.10 / 3600
    )
    # The CPU peak is the host's, not multiplied by the 8 simulated devices.
    assert record["peak_flops"] == bench.DEFAULT_CPU_PEAK_FLOPS
    assert record["mfu"] == pytest.approx(
        record["flops_per_image"] * record["train_images_per_s"] / bench.DEFAULT_CPU_PEAK_FLOPS
    )


def test_flops_per_image_is_a_training_step_of_one_image(record):
    # From the architecture: forward + backward, less the stem's input gradient
    # (2·784·9·1·4 FLOPs), exactly.
    assert record["flops_per_image"] == 3 * TINY_FORWARD_FLOPS - 2 * 784 * 9 * 4
    # From the compiler, on a CPU: one device's program holds 1/8 of the batch; a count
    # left per device would be 8× too small, one per global batch 64× too large. It adds
    # the augmentation, normalisation and update arithmetic the model count leaves out.
    assert 0.9 < record["xla_flops_per_image"] / record["flops_per_image"] < 1.6


def test_step_cost_analysis_needs_a_compiled_step():
    _, device_pool = bench.make_pool(64, (28, 28, 1), 10)
    trainer = train_lib.Trainer("tiny", device_pool, train_lib.TrainConfig(batch_size=64))
    with pytest.raises(RuntimeError, match="first call of train"):
        trainer.step_cost_analysis()


def _device(kind: str, platform: str = "gpu"):
    return types.SimpleNamespace(device_kind=kind, platform=platform)


def test_peaks_and_prices_by_device_kind():
    assert bench.peak_flops(_device("NVIDIA H100 80GB HBM3"), 8, 1.0) == 8 * 989e12
    assert bench.peak_flops(_device("NVIDIA H100 PCIe"), 1, 1.0) == 756e12
    assert bench.peak_flops(_device("NVIDIA H200"), 2, 1.0) == 2 * 989e12
    assert bench.peak_flops(_device("NVIDIA A100-SXM4-40GB"), 4, 1.0) == 4 * 312e12
    assert bench.peak_flops(_device("Tesla K80"), 1, 1.0) is None
    assert bench.peak_flops(_device("cpu", "cpu"), 8, 2e11) == 2e11
    assert costs.device_usd_per_hour(device=_device("NVIDIA H100 80GB HBM3")) == 3.00
    assert costs.device_usd_per_hour(device=_device("NVIDIA H200")) == 3.50
    assert costs.device_usd_per_hour(device=_device("cpu", "cpu")) == 0.10


def test_bad_input_is_named():
    assert bench.parse_image_shape("28x28x1") == (28, 28, 1)
    for text in ("28x28", "28x28xa", "0x28x1"):
        with pytest.raises(ValueError, match="--image_shape"):
            bench.parse_image_shape(text)
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        bench.measure("resnet19", 64)
    with pytest.raises(ValueError, match="epochs = 0"):
        bench.measure("tiny", 64, epochs=0)


def _fake_measure(calls):
    def measure(model, batch_size, **kwargs):
        calls.append((model, batch_size, kwargs))
        rate = 1000.0 * batch_size
        return {
            "model": model,
            "batch_size": batch_size,
            "device": "cpu",
            "num_devices": 1,
            "compute_dtype": "float32",
            "jax_version": jax.__version__,
            "image_shape": list(kwargs["image_shape"]),
            "train_images": kwargs["train_images"],
            "epochs": kwargs["epochs"],
            "repeats": kwargs["repeats"],
            "full_training_epochs": kwargs["full_training_epochs"],
            "usd_per_device_hour": 0.1,
            "train_images_per_s": rate,
            "score_images_per_s": 3 * rate,
            "device_seconds_per_image_epoch": 1 / rate,
            "usd_per_image": 200 * 0.1 / 3600 / rate,
            "flops_per_image": 1e6,
            "mfu": 0.25,
        }

    return measure


# Parsing only these flags, not the command line, leaves the other modules' flags alone;
# so every flag main reads is given.
FLAGS = dict(
    models="tiny,small",
    batch_sizes="32,64",
    image_shape="28x28x1",
    train_images="128",
    epochs="2",
    repeats="2",
    full_training_epochs="100",
    num_classes="10",
    compute_dtype="float32",
    usd_per_device_hour="0.1",
    cpu_peak_flops="2e11",
)


def test_main_measures_every_pair_then_prints_and_writes_them(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(bench, "measure", _fake_measure(calls))
    monkeypatch.setattr(bench, "make_pool", lambda *args: "pool")
    out = tmp_path / "bench.jsonl"
    with flagsaver.as_parsed(out=str(out), vs_torch="false", **FLAGS):
        bench.main(["benchmarks.train_cost"])
    assert [(m, b) for m, b, _ in calls] == [
        ("tiny", 32),
        ("tiny", 64),
        ("small", 32),
        ("small", 64),
    ]
    kwargs = calls[0][2]
    assert (kwargs["train_images"], kwargs["epochs"], kwargs["repeats"]) == (128, 2, 2)
    assert kwargs["image_shape"] == (28, 28, 1) and kwargs["pool"] == "pool"
    assert kwargs["full_training_epochs"] == 100 and kwargs["compute_dtype"] == "float32"
    assert (kwargs["usd_per_device_hour"], kwargs["cpu_peak_flops"]) == (0.1, 2e11)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["model"], r["batch_size"]) for r in lines] == [(m, b) for m, b, _ in calls]
    assert lines[3]["train_images_per_s"] == 64_000.0
    printed = capsys.readouterr().out
    assert "64,000" in printed and "192,000" in printed and "25%" in printed


def test_vs_torch_without_torch_says_so_and_still_measures(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    calls = []
    monkeypatch.setattr(bench, "measure", _fake_measure(calls))
    monkeypatch.setattr(bench, "make_pool", lambda *args: "pool")
    out = tmp_path / "bench.jsonl"
    with flagsaver.as_parsed(out=str(out), vs_torch="true", **FLAGS):
        bench.main(["benchmarks.train_cost"])
    printed = capsys.readouterr().out
    assert "--vs_torch: PyTorch is not installed" in printed
    assert "skipping the PyTorch comparison" in printed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and not any("jax_vs_torch" in r for r in lines)


def test_torch_twins_have_the_flax_parameter_counts():
    pytest.importorskip("torch")
    from benchmarks import torch_resnets

    for name in models.MODEL_NAMES:
        flax_model = models.create_model(name, num_classes=10)
        shapes = jax.eval_shape(
            lambda x, m=flax_model: m.init(jax.random.key(0), x, train=False),
            jax.ShapeDtypeStruct((1, 32, 32, 3), jax.numpy.float32),
        )
        twin = torch_resnets.ResNet(name, in_channels=3, num_classes=10)
        count = sum(p.numel() for p in twin.parameters())
        assert count == models.count_params(shapes["params"]), name


def test_vs_torch_times_both_twins_and_compares_them(record):
    pytest.importorskip("torch")
    work = dict(image_shape=(28, 28, 1), num_classes=10, train_images=128, epochs=1, repeats=1)
    out = bench.vs_torch(record, **work)
    for prefix in ("torch", "torch_tuned"):
        rate = out[f"{prefix}_train_images_per_s"]
        assert math.isfinite(rate) and rate > 0
        assert out[f"jax_vs_{prefix}"] == pytest.approx(record["train_images_per_s"] / rate)
    table = bench.format_table([record | out])
    assert "JAX/tuned" in table and f"{out['jax_vs_torch_tuned']:.2f}" in table
