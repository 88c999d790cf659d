"""Baselines: "stop now" prices, AL(δ) on a small pool priced per image-epoch (so every
dollar is known), oracle-assisted AL and hindsight."""

import numpy as np
import pytest

from configs import synthetic
from mcal_jax import profile as profile_lib
from mcal_jax.run import baselines
from mcal_jax.run.prepare import prepare
from mcal_jax.run.state import TEST_PURCHASE_KEY
from mcal_jax.scores import Scores
from mcal_jax.summary import ALResult, Hindsight, OracleAL

RATE = 1e-4  # USD per image-epoch of the tiny model, so device dollars are easy to see


def _config(n=600, **mcal):
    config = synthetic.get_config(str(n))
    mcal = {"plan_test_fraction": 0.1, "min_plan_test_items": 20, **mcal}  # |T_plan| = N/10
    with config.unlocked():
        config.cost.mode = "per_image_epoch"
        config.cost.usd_per_image_epoch.tiny = RATE
        config.baselines.run = True
        for name, value in mcal.items():
            config.mcal[name] = value
    return config


def _result(fraction, prices, sizes):
    best = int(np.argmin(prices))
    return ALResult(
        delta_fraction=fraction,
        delta=int(fraction * 1000),
        total_usd=prices[-1],
        rounds=len(prices),
        train_size=sizes[-1],
        machine=0,
        stop_now_usd=tuple(prices),
        train_sizes=tuple(sizes),
        best_round=best + 1,
        best_round_usd=prices[best],
    )


def test_compare_picks_the_oracle_and_the_hindsight_floor():
    al = {
        "0.01": _result(0.01, [50.0, 41.0, 38.0, 39.5], [10, 20, 30, 40]),
        "0.05": _result(0.05, [50.0, 36.0, 37.0], [10, 60, 110]),
        "0.2": _result(0.2, [50.0, 45.0], [10, 210]),
    }
    compared = baselines.compare(al, human_only_usd=80.0)
    # The oracle knows which δ ends cheapest: AL(1%) ends at 39.5, AL(5%) at 37.
    assert compared.oracle_al == OracleAL(delta_fraction=0.05, total_usd=37.0)
    # Hindsight stops AL(5%) after round 2, at 36: below every price any AL(δ) stopped at.
    assert compared.hindsight == Hindsight(total_usd=36.0, delta_fraction=0.05, round=2)
    assert all(compared.hindsight.total_usd <= p for r in al.values() for p in r.stop_now_usd)
    assert compared.human_only == 80.0 and set(compared.al) == set(al)
    with pytest.raises(ValueError, match="no AL"):
        baselines.compare({}, 80.0)


def test_stop_now_prices_humans_for_everything_not_certified(tmp_path):
    ctx = prepare(_config(1000), str(tmp_path))  # N = 1000, |T| = 100, 0.04 USD, ε = 5%
    test = ctx.plan_test
    labels = ctx.labeler.label(test)
    ctx.ledger.buy(ctx.labeler, test, purpose="test", key=TEST_PURCHASE_KEY)
    others = ctx.outside()
    labeled, unlabeled = others[:200], others[200:]  # |B| = 200, |U| = 700
    confidence = np.zeros(1000, np.float32)
    confidence[unlabeled] = np.linspace(0.0, 1.0, 700)
    confidence[test] = np.linspace(0.0, 1.0, 100)
    # T's predictions are right above confidence 0.4 and wrong below.
    predicted = np.zeros(1000, np.int32)
    predicted[test] = np.where(confidence[test] >= 0.4, labels, (labels + 1) % 4)
    scores = Scores(confidence, predicted)
    split = baselines.Split.of(ctx, labeled)
    np.testing.assert_array_equal(split.unlabeled, unlabeled)
    price, machine = baselines.stop_now_usd(ctx, scores, split, 1.5)
    # The certificate on the fine grid: every 0.1% of U.
    profile = profile_lib.error_profile(
        confidence[unlabeled],
        confidence[test],
        predicted[test] == labels,
        thetas=profile_lib.CERTIFY_THETAS,
    )
    choice = profile_lib.choose_machine_threshold(
        profile, epsilon=0.05, constraint="overall", num_items=1000, confidence=0.95
    )
    assert machine == choice.num_machine > 0
    assert price == pytest.approx((100 + 200 + 700 - machine) * 0.04 + 1.5)


def test_active_learning_pays_exactly_what_its_rounds_bought(tmp_path):
    ctx = prepare(_config(), str(tmp_path))
    test = ctx.plan_test
    ctx.ledger.buy(ctx.labeler, test, purpose="test", key=TEST_PURCHASE_KEY)
    n, num_test, train = ctx.num_items, ctx.settings.num_test, ctx.settings.train
    result = baselines.active_learning(ctx, "tiny", fraction=0.1, max_rounds=3)
    assert result.delta == 60
    sizes = np.asarray(result.train_sizes)
    assert sizes[0] == len(ctx.initial_batch) == 30
    assert np.all(np.diff(sizes) == 60)  # a fixed δ: the point of the baseline
    # Per-image-epoch prices: training the images of 10 passes over |B| in batches of 32,
    # scoring the N − |B| others at a third of that each.
    images = np.array([10 * -(-s // 32) * 32 for s in sizes])
    assert list(images) == [train.images(s) for s in sizes]
    device = np.cumsum(images * RATE + (n - sizes) * RATE / 3)
    unlabeled = n - num_test - sizes[-1]
    # Its price is a certified final labeling: people label T_plan, B, its T_cert (drawn
    # from the reserve as MCAL's) and what the certificate leaves; nothing else is paid.
    assert 0 < result.machine < unlabeled
    assert result.total_usd == pytest.approx((n - result.machine) * 0.04 + device[-1])
    # Stopped at the round cap, or because its estimate on T_plan machine-labeled the rest.
    everything = (num_test + sizes[-1]) * 0.04 + device[-1]
    assert result.rounds == 3 or result.stop_now_usd[-1] == pytest.approx(everything)


def test_run_baselines_saves_each_delta_and_resumes(tmp_path, monkeypatch):
    config = _config()
    with config.unlocked():
        config.baselines.delta_fractions = (0.1, 0.3)
        config.baselines.max_rounds = 2
    ctx = prepare(config, str(tmp_path))
    test = ctx.plan_test
    ctx.ledger.buy(ctx.labeler, test, purpose="test", key=TEST_PURCHASE_KEY)
    first = baselines.run_baselines(ctx, "tiny")
    assert set(first.al) == {"0.1", "0.3"}
    totals = {k: r.total_usd for k, r in first.al.items()}
    assert first.oracle_al.total_usd == min(totals.values())
    assert first.hindsight.total_usd <= min(totals.values())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished δ was run again")

    monkeypatch.setattr(baselines, "measure", no_training)
    assert baselines.run_baselines(ctx, "tiny") == first
