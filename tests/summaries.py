"""Complete ``summary.json`` values for the tests that write workdirs by hand: a finished
run of 2,000 items whose numbers add up (`summary_json`), and its baselines."""

N, NUM_TEST, USD_PER_LABEL = 2000, 100, 0.04


def al_result(fraction, total_usd, rounds=3):
    """One AL(δ) entry of the baselines, as `mcal_jax.summary.ALResult` writes it."""
    sizes = [100 * (r + 1) for r in range(rounds)]
    return {
        "delta_fraction": fraction,
        "delta": int(fraction * N),
        "total_usd": total_usd,
        "rounds": rounds,
        "train_size": sizes[-1],
        "machine": 1000,
        "stop_now_usd": [total_usd] * rounds,
        "train_sizes": sizes,
        "best_round": rounds,
        "best_round_usd": total_usd,
    }


def baselines_json(al_totals, hindsight_usd, hindsight_fraction=None, human_only=N * USD_PER_LABEL):
    """The baselines with AL(δ) ending at ``al_totals`` ({"0.05": 41.5, ...}), hindsight
    at ``hindsight_usd`` (with the oracle's δ unless ``hindsight_fraction`` is given)."""
    oracle = min(al_totals, key=al_totals.get)
    hindsight_fraction = float(oracle) if hindsight_fraction is None else hindsight_fraction
    return {
        "al": {key: al_result(float(key), usd) for key, usd in al_totals.items()},
        "human_only": human_only,
        "oracle_al": {"delta_fraction": float(oracle), "total_usd": al_totals[oracle]},
        "hindsight": {"total_usd": hindsight_usd, "delta_fraction": hindsight_fraction, "round": 7},
    }


def summary_json(total=33.3, baselines=None, budget_usd=None):
    """A finished run's summary.json as a dict, costing ``total`` USD."""
    counts = {"test": NUM_TEST, "train": 400, "certify": 150, "machine": 1200, "residual": 150}
    human_only = N * USD_PER_LABEL
    loop_usd = 21.3
    summary = {
        "dataset": "fake_mnist",
        "num_items": N,
        "classes": ["0", "1", "2", "3"],
        "epsilon": 0.05,
        "constraint": "overall",
        "model": "small",
        "counts": counts,
        "fractions": {k: v / N for k, v in counts.items()},
        "machine_fraction": {"predicted": 0.55, "certified": 1200 / N},
        "cost_usd": {
            "human_labels": 32.0,
            "human_labels_test": 4.0,
            "human_labels_train": 16.0,
            "human_labels_certify": 6.0,
            "human_labels_residual": 6.0,
            "training": 1.25,
            "scoring": 0.05,
            "total": total,
            "human_only": human_only,
        },
        "savings_vs_human_only": 1 - total / human_only,
        "budget": {
            "usd": budget_usd,
            "stopped_loop": False,
            "loop_usd": loop_usd,
            "after_loop_usd": total - loop_usd,
            "beyond_usd": None if budget_usd is None else max(0.0, total - budget_usd),
        },
        "error": {
            "estimated": 0.021,
            "upper_bound": 0.034,
            "upper_bound_overall": 0.034,
            "upper_bound_machine_subset": 0.034 * N / 1200,
            "confidence": 0.95,
            "true": 0.025,
            "true_overall": 0.025,
            "true_machine_subset": 0.0417,
        },
        "threshold": {"theta": 0.7, "confidence_threshold": 0.81, "start_theta": 0.05, "tested": 9},
        "rounds": 4,
        "stop_reason": "B_opt ≤ |B|: buying more labels no longer pays",
        "certify_on": "reserve",
        "usd_per_label": USD_PER_LABEL,
        "cost_mode": "per_image_epoch",
    }
    if baselines is not None:
        summary["baselines"] = baselines
    return summary
