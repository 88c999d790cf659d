"""Tests for mcal_jax.labelers: prices, and the simulated labeler's truth, noise and determinism."""

import math

import numpy as np
import pytest

from mcal_jax.labelers import PRICES_USD, Labeler, SimulatedLabeler, usd_per_label


def make_truth(n: int = 20_000, num_classes: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, n).astype(np.int32)


@pytest.mark.parametrize(
    "service, expected",
    [
        ("amazon", 0.04),
        ("satyam", 0.003),
        (" Amazon ", 0.04),
        ("SATYAM", 0.003),
        ("0.01", 0.01),
        ("2e-3", 0.002),
        (0.5, 0.5),
        (1, 1.0),
        (np.float32(0.25), 0.25),
        (0, 0.0),
        ("0", 0.0),
    ],
)
def test_usd_per_label_presets_and_numbers(service, expected):
    assert usd_per_label(service) == pytest.approx(expected, rel=1e-7)
    assert isinstance(usd_per_label(service), float)


def test_presets_are_the_papers_prices():
    assert PRICES_USD == {"amazon": 0.04, "satyam": 0.003}


@pytest.mark.parametrize("service", [-0.01, "-1", "mturk", "", float("nan"), "inf", math.inf])
def test_usd_per_label_rejects_bad_values_naming_value_and_presets(service):
    with pytest.raises(ValueError) as info:
        usd_per_label(service)
    message = str(info.value)
    assert repr(service) in message
    assert "amazon" in message and "satyam" in message


@pytest.mark.parametrize("service", [True, None, [0.04]])
def test_usd_per_label_rejects_non_numbers(service):
    with pytest.raises(TypeError, match="amazon"):
        usd_per_label(service)


def test_exact_ground_truth_without_noise():
    truth = make_truth(1000)
    labeler = SimulatedLabeler(truth, 5, usd_per_label="satyam")
    indices = np.array([999, 0, 17, 500, 3])
    labels = labeler.label(indices)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, truth[indices])
    np.testing.assert_array_equal(labeler.label(np.arange(1000)), truth)
    assert labeler.labels_served == 1005
    assert labeler.usd_per_label == 0.003
    assert isinstance(labeler, Labeler)


def test_noise_rate_and_wrong_labels_are_other_classes_uniformly():
    num_classes = 5
    truth = make_truth(20_000, num_classes)
    labeler = SimulatedLabeler(truth, num_classes, usd_per_label=0.04, error_rate=0.2, seed=3)
    labels = labeler.label(np.arange(20_000))
    wrong = labels != truth
    assert abs(wrong.mean() - 0.2) < 0.015
    assert labels.min() >= 0 and labels.max() < num_classes
    # A wrong label is one of the K - 1 other classes, each equally likely (4,000 wrong
    # labels, ~1,000 per offset, standard deviation ~27).
    offsets = (labels[wrong] - truth[wrong]) % num_classes
    counts = np.bincount(offsets, minlength=num_classes)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / wrong.sum(), 0.25, atol=0.03)
    # The errors do not depend on the true class.
    for c in range(num_classes):
        assert abs(wrong[truth == c].mean() - 0.2) < 0.03


def test_noise_is_a_function_of_seed_and_index():
    truth = make_truth(5000)
    a = SimulatedLabeler(truth, 5, usd_per_label=0.04, error_rate=0.3, seed=7)
    b = SimulatedLabeler(truth, 5, usd_per_label=0.04, error_rate=0.3, seed=7)
    other = SimulatedLabeler(truth, 5, usd_per_label=0.04, error_rate=0.3, seed=8)
    everything = a.label(np.arange(5000))
    # Same answer again, from another instance, and whatever else is asked with it.
    np.testing.assert_array_equal(a.label(np.arange(5000)), everything)
    np.testing.assert_array_equal(b.label(np.arange(5000)), everything)
    subset = np.array([4999, 12, 7, 3000])
    np.testing.assert_array_equal(b.label(subset), everything[subset])
    np.testing.assert_array_equal(a.label(subset[2:3]), everything[subset[2:3]])
    # Another seed is another annotator pool: different errors, same rate.
    relabelled = other.label(np.arange(5000))
    assert np.mean(relabelled != everything) > 0.2
    assert abs(np.mean(relabelled != truth) - 0.3) < 0.03


def test_error_rate_one_is_always_wrong():
    truth = make_truth(2000, 3)
    labels = SimulatedLabeler(truth, 3, usd_per_label=0, error_rate=1.0).label(np.arange(2000))
    assert np.all(labels != truth)


def test_out_of_range_and_non_integer_indices():
    labeler = SimulatedLabeler(make_truth(100), 5, usd_per_label=0.04)
    with pytest.raises(IndexError, match=r"100, -1"):
        labeler.label(np.array([3, 100, -1]))
    with pytest.raises(ValueError, match="float"):
        labeler.label(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        labeler.label(np.array([[1, 2]]))
    assert labeler.labels_served == 0
    assert labeler.label(np.array([], np.int64)).shape == (0,)
    assert labeler.label([]).dtype == np.int32


def test_true_labels_for_report_sells_nothing():
    truth = make_truth(100)
    labeler = SimulatedLabeler(truth, 5, usd_per_label=0.04, error_rate=0.5)
    np.testing.assert_array_equal(labeler.true_labels_for_report(np.arange(100)), truth)
    assert labeler.labels_served == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(error_rate=-0.1), "error_rate"),
        (dict(error_rate=1.5), "error_rate"),
        (dict(error_rate=float("nan")), "error_rate"),
        (dict(usd_per_label="mturk"), "mturk"),
        (dict(num_classes=3), r"\[0, num_classes = 3\)"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_constructor_validation(kwargs, match):
    args = dict(num_classes=5, usd_per_label=0.04) | kwargs
    truth = np.array([0, 4, 2])
    with pytest.raises(ValueError, match=match):
        SimulatedLabeler(truth, args.pop("num_classes"), **args)


def test_noise_needs_another_class():
    with pytest.raises(ValueError, match="num_classes = 1"):
        SimulatedLabeler(np.zeros(3, int), 1, usd_per_label=0.04, error_rate=0.1)
    labels = SimulatedLabeler(np.zeros(3, int), 1, usd_per_label=0.04).label([0, 2])
    np.testing.assert_array_equal(labels, [0, 0])
