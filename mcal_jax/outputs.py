"""Files of a run's workdir: config.json, state.json, metrics.jsonl, scores/, checkpoints/,
labels.npz and summary.json (the ledger keeps its own file, ledger.jsonl)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import numpy as np
from absl import logging

from mcal_jax import controller
from mcal_jax.fit import fit_truncated_power_laws


def _writes_files() -> bool:
    """In a multi-host job only process 0 writes the workdir (a shared filesystem)."""
    return jax.process_index() == 0


def atomic_write_json(path: str, value) -> None:
    """Writes ``value`` so that a crash leaves either the old file or the new one."""
    if not _writes_files():
        return
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(value, f, indent=1, default=float)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def read_json(path: str):
    """The parsed file, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error


def history_to_json(history: controller.History) -> dict:
    fields = dataclasses.asdict(history)
    return {
        k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in fields.items()
    }


def history_from_json(fields: dict) -> controller.History:
    return controller.History(
        **{
            k: np.asarray(v)
            if isinstance(v, list) and k in ("test_errors", "test_counts", "thetas")
            else v
            for k, v in fields.items()
        }
    )


def plan_summary(plan: controller.Plan) -> dict:
    keys = (
        "b_opt",
        "theta_star",
        "num_machine",
        "machine_error",
        "cost_star_usd",
        "human_labels_usd",
        "training_so_far_usd",
        "future_training_usd",
        "scoring_usd",
        "future_rounds",
        "next_delta",
        "stable",
        "stop",
        "reason",
    )
    summary = {k: getattr(plan, k) for k in keys}
    summary["cost_curve"] = {
        "b": np.asarray(plan.b_grid).tolist(),
        "usd": np.asarray(plan.cost_by_b).tolist(),
    }
    return json.loads(json.dumps(summary, default=float))


def log_round(record: dict, plan: controller.Plan) -> None:
    logging.info(
        "round %d [%s]: |B|=%d  C*=%.2f USD  b_opt=%d  θ*=%.2f  δ=%d  spent=%.2f USD%s",
        record["round"],
        record["lead"],
        record["train_size"],
        plan.cost_star_usd,
        plan.b_opt,
        plan.theta_star,
        len(record["next_batch"]),
        record["spent_usd"],
        f"  stop: {record['reason']}" if record["stop"] else "",
    )


def append_metrics(workdir, record, plan, outcome) -> None:
    if not _writes_files():
        return

    history = outcome.history
    fit = fit_truncated_power_laws(
        history.train_sizes, history.test_errors, history.test_counts, thetas=history.thetas
    )
    line = {
        "round": record["round"],
        "model": record["lead"],
        "train_size": record["train_size"],
        "delta": len(record["next_batch"]),
        "cost_star_usd": plan.cost_star_usd,
        "b_opt": plan.b_opt,
        "theta_star": plan.theta_star,
        "stable": plan.stable,
        "stop": record["stop"],
        "reason": record["reason"],
        "error_profile": {
            "thetas": history.thetas.tolist(),
            "errors": history.test_errors[-1].tolist(),
            "counts": history.test_counts[-1].tolist(),
        },
        "fit": {
            k: np.asarray(getattr(fit, k)).tolist() for k in ("alpha", "gamma", "inv_k", "trusted")
        },
        "device_seconds": outcome.train_result.device_seconds,
        "spent_usd": record["spent_usd"],
    }
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(line, default=float) + "\n")


def save_scores(workdir: str, round_index: int, scores) -> None:
    """The lead model's pool scores of a round: the final labeling reuses the last ones."""
    if not _writes_files():
        return
    os.makedirs(os.path.join(workdir, "scores"), exist_ok=True)
    path = os.path.join(workdir, "scores", f"round{round_index}.npz")
    np.savez(path + ".tmp.npz", confidence=scores.confidence, predicted=scores.predicted)
    os.replace(path + ".tmp.npz", path)


def load_scores(workdir: str, round_index: int) -> tuple[np.ndarray, np.ndarray]:
    saved = np.load(os.path.join(workdir, "scores", f"round{round_index}.npz"))
    return saved["confidence"], saved["predicted"]


def checkpoint_variables(workdir: str, round_index: int, model: str, variables) -> None:
    """Saves a round's trained variables with orbax (``checkpoints/round{i}_{model}``)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.path.join(workdir, "checkpoints", f"round{round_index}_{model}"))
    if os.path.exists(path):
        return  # written before a restart
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # orbax narrates every save at INFO
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path, variables)
    finally:
        logging.set_verbosity(verbosity)


def write_final_outputs(setup, state, choice, machine, predicted, confidence) -> dict:
    """labels.npz (every item: label, source, confidence) and summary.json."""
    config, ledger, workdir = setup.config, setup.ledger, setup.workdir
    n = setup.num_items
    human_idx, human_labels = ledger.labels()
    labels = np.full(n, -1, np.int32)
    source = np.full(n, "human", dtype="<U7")
    labels[human_idx] = human_labels
    labels[machine] = predicted[machine]
    source[machine] = "machine"
    if np.any(labels < 0):
        raise RuntimeError(f"{int(np.sum(labels < 0))} items ended without a label")
    if _writes_files():
        np.savez(
            os.path.join(workdir, "labels.npz"),
            index=np.arange(n),
            label=labels,
            source=source,
            confidence=confidence,
        )
    truth = setup.labeler.true_labels_for_report(machine)  # simulation only
    machine_errors = int(np.sum(labels[machine] != truth))
    totals = ledger.totals()
    human_only = n * setup.labeler.usd_per_label
    counts = {
        "test": len(ledger.bought("test")[0]),
        "train": len(ledger.bought("train")[0]),
        "machine": len(machine),
        "residual": len(ledger.bought("residual")[0]),
    }
    true_overall = machine_errors / n
    true_subset = machine_errors / max(len(machine), 1)
    rounds = state["rounds"]
    summary = {
        "dataset": setup.dataset_name,
        "num_items": n,
        "epsilon": config.mcal.epsilon,
        "constraint": config.mcal.constraint,
        "model": rounds[-1]["lead"],
        "counts": counts,
        "fractions": {k: v / n for k, v in counts.items()},
        "cost_usd": {
            "human_labels": totals["human_labels"],
            "human_labels_test": totals["human_labels_test"],
            "human_labels_train": totals["human_labels_train"],
            "human_labels_residual": totals["human_labels_residual"],
            "training": totals["training"],
            "scoring": totals["scoring"],
            "total": totals["total"],
            "human_only": human_only,
        },
        "savings_vs_human_only": 1 - totals["total"] / human_only,
        "error": {
            # Overall: machine errors over all N items; machine_subset: over |S|.
            "estimated": _estimated_error(choice, n),
            "upper_bound": _bound(choice, n),
            "confidence": choice.confidence,
            "true": true_overall if config.mcal.constraint == "overall" else true_subset,
            "true_overall": true_overall,
            "true_machine_subset": true_subset,
        },
        "threshold": {"theta": choice.theta, "confidence_threshold": choice.threshold},
        "rounds": len(rounds),
        "stop_reason": rounds[-1]["reason"],
        "usd_per_label": setup.labeler.usd_per_label,
        "cost_mode": config.cost.mode,
    }
    if "baselines" in state:
        summary["baselines"] = state["baselines"]
    atomic_write_json(os.path.join(workdir, "summary.json"), summary)
    return summary


def _estimated_error(choice, n: int) -> float:
    """ε_T at the chosen threshold, in the units of the constraint."""
    if choice.constraint == "overall":
        return choice.num_machine * choice.estimated_error / n
    return choice.estimated_error


def _bound(choice, n: int) -> float:
    if choice.constraint == "overall":
        return choice.num_machine * choice.upper_bound / n
    return choice.upper_bound
