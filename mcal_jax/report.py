"""Plots and tables of a finished MCAL run (``write_report``) or of a sweep (``sweep_report``).

A run's report reads the workdir that :mod:`mcal_jax.run` wrote (summary.json, as a
`mcal_jax.summary.Summary`, and rounds.jsonl) and writes into ``workdir/report/``:

- ``error_vs_b.png``: measured ε_T(θ) against |B| with the fitted truncated power laws
  (Eq. 2) for a few θ, and how the fit of one θ moves as rounds add points (the paper's
  Figs. 1 and 2).
- ``cost_vs_b.png``: the predicted total cost C(b) (Eq. 1) planned after each round, with
  B_opt and C* marked.
- ``cost_breakdown.png``: what the run paid, by item, against labeling everything by hand.
- ``baselines.png`` (when the summary holds baselines): MCAL against AL(δ), oracle-assisted
  AL, the hindsight floor and human-only labeling (the paper's Figs. 5–7).
- ``summary.md``: the summary (its error bound over all items and on the machine labels
  alone, and what the budget bounded, first), the baselines and one row per round.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, and the same output everywhere
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.typing import ColorType  # noqa: E402

from mcal_jax import files  # noqa: E402
from mcal_jax.fit import PSEUDO_COUNT, log_error_targets, predict_error  # noqa: E402
from mcal_jax.profile import THETAS  # noqa: E402
from mcal_jax.run.state import ModelRound, RoundRecord  # noqa: E402
from mcal_jax.run.workdir import Workdir  # noqa: E402
from mcal_jax.summary import Comparison, Summary, read_summary  # noqa: E402

REPORT_DIR = "report"
# θ drawn in the learning-curve plot (the nearest available ones), and the θ of the
# fit-by-round panel (the paper's appendix shows θ = 50%).
PLOT_THETAS = (0.25, 0.5, 0.75, 1.0)
FIT_HISTORY_THETA = 0.5
_DPI = 120


def read_run_json(path: str, what: str) -> Any:
    """The parsed file; FileNotFoundError saying ``what`` when it is missing."""
    value = files.read_json(path)
    if value is None:
        raise FileNotFoundError(f"{path} not found: {what}")
    return value


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """What a report reads of a finished run: its summary and its round records."""

    summary: Summary
    rounds: list[RoundRecord]


def load_run(workdir: str) -> FinishedRun:
    """The summary and round records of a finished run (read only)."""
    unfinished = f"{workdir} is not a finished MCAL run (run.mcal writes it at the end)"
    path = os.path.join(workdir, "summary.json")
    summary = read_summary(path)
    if summary is None:
        raise FileNotFoundError(f"{path} not found: {unfinished}")
    if not os.path.exists(os.path.join(workdir, "rounds.jsonl")):
        raise FileNotFoundError(f"{workdir}/rounds.jsonl not found: {unfinished}")
    rounds = Workdir(workdir, writer=False).read_rounds()
    if not rounds:
        raise ValueError(f"{workdir}/rounds.jsonl holds no rounds")
    return FinishedRun(summary, rounds)


def write_report(workdir: str) -> list[str]:
    """Writes the plots and summary.md of a finished run into ``workdir/report/``."""
    run = load_run(workdir)
    out = os.path.join(workdir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    paths = [
        save_figure(plot_error_vs_b(run), out, "error_vs_b.png"),
        save_figure(plot_cost_vs_b(run), out, "cost_vs_b.png"),
        save_figure(plot_cost_breakdown(run.summary), out, "cost_breakdown.png"),
    ]
    if run.summary.baselines is not None:
        paths.append(save_figure(plot_baselines(run.summary), out, "baselines.png"))
    paths.append(os.path.join(out, "summary.md"))
    with open(paths[-1], "w") as f:
        f.write(summary_markdown(run, [os.path.basename(p) for p in paths[:-1]]))
    return paths


def save_figure(fig: Figure, out: str, name: str) -> str:
    path = os.path.join(out, name)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _final_rounds(run: FinishedRun) -> tuple[str, list[ModelRound]]:
    """The final model and its measurements of every round it ran (also the rounds in
    which another candidate led)."""
    model = run.summary.model
    return model, [r.candidates[model] for r in run.rounds if model in r.candidates]


def _measured(errors: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ε_T and a zero-error mask; a zero count is the fit's pseudo-count over the items."""
    log_rate, weight = log_error_targets(errors, counts, PSEUDO_COUNT)
    has = weight > 0
    return np.where(has, np.exp(log_rate), np.nan), has & (errors == 0)


def plot_error_vs_b(run: FinishedRun) -> Figure:
    """Left: ε_T(θ) per round and the final fit (Eq. 2) for a few θ, dashed where it
    extrapolates. Right: the fits of one θ after each round against all its points."""
    model, measured = _final_rounds(run)
    thetas = np.asarray(THETAS, float)
    b = np.asarray([m.train_size for m in measured], float)
    errors = np.asarray([m.test_errors for m in measured], float)
    counts = np.asarray([m.test_counts for m in measured], float)
    plans = [m.plan for m in measured]
    b_max = max(run.summary.num_items - run.summary.counts.test, b.max())
    fig, (ax, ax_hist) = plt.subplots(1, 2, figsize=(13, 5))
    grid = np.geomspace(b.min(), b_max, 200)
    final_fit = plans[-1].error_model
    predicted = np.asarray(predict_error(final_fit, grid))
    shown = sorted({int(np.argmin(np.abs(thetas - t))) for t in PLOT_THETAS})
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(shown)))
    for i, color in zip(shown, colors, strict=True):
        rate, zero = _measured(errors[:, i], counts[:, i])
        trusted = bool(final_fit.trusted[i])
        label = f"θ = {thetas[i]:.2f}" + ("" if trusted else " (fit not trusted)")
        _plot_measured(ax, b, rate, zero, color, label)
        style = {"color": color, "alpha": 1.0 if trusted else 0.4}
        inside = grid <= b.max()
        ax.plot(grid[inside], predicted[i][inside], "-", **style)
        ax.plot(grid[~inside], predicted[i][~inside], "--", **style)
    ax.plot([], [], "k-", label="fit (Eq. 2)")
    ax.plot([], [], "k--", label="fit, extrapolated")
    eps = run.summary.epsilon
    ax.axhline(eps, color="grey", ls=":", lw=1, label=f"ε = {eps:g}")
    ax.set(xscale="log", yscale="log", xlabel="|B| (human-labeled training items)")
    ax.set(ylabel="ε_T(θ): test error above τ_θ")
    ax.set_title(f"{model}: measured (dots; hollow: no errors) and fitted (Eq. 2)")
    ax.legend(fontsize=8)

    i = int(np.argmin(np.abs(thetas - FIT_HISTORY_THETA)))
    rate, zero = _measured(errors[:, i], counts[:, i])
    _plot_measured(ax_hist, b, rate, zero, "k", "ε_T")
    # At most six fits (evenly spaced rounds, the last included) keep the legend readable.
    chosen = np.unique(np.linspace(0, len(plans) - 1, min(len(plans), 6)).round()).astype(int)
    colors = plt.cm.plasma(np.linspace(0.0, 0.85, max(len(chosen), 1)))
    round_numbers = [r.round for r in run.rounds if model in r.candidates]
    for j, color in zip(chosen, colors, strict=False):
        curve = np.asarray(predict_error(plans[j].error_model, grid))[i]
        ax_hist.plot(grid, curve, color=color, label=f"fit after round {round_numbers[j]}")
    ax_hist.set(xscale="log", yscale="log", xlabel="|B| (human-labeled training items)")
    ax_hist.set(ylabel=f"ε_T(θ = {thetas[i]:.2f})")
    ax_hist.set_title("the fit as rounds add points")
    ax_hist.legend(fontsize=8)
    rates = errors / np.maximum(counts, 1)
    floor = max(float(rates[rates > 0].min(initial=1.0)) / 10, 1e-4)
    for a in (ax, ax_hist):
        a.set_ylim(bottom=max(a.get_ylim()[0], floor))  # extrapolations can dive to 1e-9
        _plain_log_ticks(a)
    fig.tight_layout()
    return fig


def _plot_measured(
    ax: Axes, b: np.ndarray, rate: np.ndarray, zero: np.ndarray, color: ColorType, label: str
) -> None:
    ax.plot(b[~zero], rate[~zero], "o", color=color, label=label)
    ax.plot(b[zero], rate[zero], "o", mfc="none", color=color)


def _plain_log_ticks(ax: Axes) -> None:
    """Log axes labelled 200, 500, 1000, … rather than 2×10², with a light grid."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)


def plot_cost_vs_b(run: FinishedRun) -> Figure:
    """The plan of every round: predicted total cost against the final |B|, B_opt marked."""
    summary, rounds = run.summary, run.rounds
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.cm.viridis
    norm = matplotlib.colors.Normalize(1, max(len(rounds), 2))
    for record in rounds:
        plan = record.plan
        b = np.asarray(plan.b_grid, float)
        usd = np.asarray(plan.cost_by_b, float)
        ok = np.isfinite(usd)
        color = cmap(norm(record.round))
        ax.plot(b[ok], usd[ok], color=color, lw=1.2)
        ax.plot(plan.b_opt, plan.cost_star_usd, "o", color=color, mec="k", ms=7)
    ax.plot([], [], "o", color="w", mec="k", label="B_opt (C*) of the round")
    human_only = summary.cost_usd.human_only
    ax.axhline(human_only, color="k", ls="--", lw=1, label=f"human only ({human_only:.2f} USD)")
    ax.axvline(summary.counts.train, color="grey", ls=":", label="final |B|")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, label="round")
    bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    ax.set(xlabel="final |B| (human-labeled training items)", ylabel="predicted total cost (USD)")
    ax.set_title("predicted cost C(b) after each round (Eq. 1)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


_BREAKDOWN = (
    ("human_labels_test", "labels of T_plan"),
    ("human_labels_train", "labels of B"),
    ("human_labels_certify", "labels of T_cert"),
    ("human_labels_residual", "labels of R"),
    ("training", "training"),
    ("scoring", "scoring"),
)


def plot_cost_breakdown(summary: Summary) -> Figure:
    """The final cost by item (Eq. 1) as a stacked bar, against human-only labeling."""
    cost = summary.cost_usd
    fig, ax = plt.subplots(figsize=(8, 3))
    left = 0.0
    colors = plt.cm.tab10(np.arange(len(_BREAKDOWN)))
    for (key, name), color in zip(_BREAKDOWN, colors, strict=True):
        value = float(getattr(cost, key))
        ax.barh("MCAL", value, left=left, color=color, label=f"{name}: {format_usd(value)} USD")
        left += value
    ax.barh("human only", cost.human_only, color="grey")
    for y, value in ((0, cost.total), (1, cost.human_only)):
        ax.text(value, y, f" {format_usd(value)} USD", va="center")
    ax.set_xlim(0, 1.18 * max(cost.total, cost.human_only))
    ax.set_xlabel("USD")
    saved = 100 * summary.savings_vs_human_only
    ax.set_title(f"{summary.dataset}: total cost ({saved:.1f}% saved)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def al_points(baselines: Comparison) -> list[tuple[float, float]]:
    """(δ / N, total USD) of every AL(δ), by δ."""
    return sorted((r.delta_fraction, r.total_usd) for r in baselines.al.values())


def plot_baselines(summary: Summary) -> Figure:
    """Total cost against δ for AL(δ), with MCAL, hindsight and human-only as lines."""
    if summary.baselines is None:
        raise ValueError(f"{summary.dataset}: the summary holds no baselines")
    baselines = summary.baselines
    fig, ax = plt.subplots(figsize=(8, 5))
    points = al_points(baselines)
    if points:
        delta, usd = np.asarray(points).T
        ax.plot(100 * delta, usd, "o-", color="C0", label="AL(δ)")
    oracle = baselines.oracle_al
    ax.plot(
        100 * oracle.delta_fraction,
        oracle.total_usd,
        "*",
        ms=16,
        color="C1",
        label=f"oracle AL ({format_usd(oracle.total_usd)})",
    )
    lines: list[tuple[float, str, dict[str, Any]]] = [
        (summary.cost_usd.total, "MCAL", {"color": "C3", "lw": 2}),
        (baselines.human_only, "human only", {"color": "k", "ls": "--"}),
        (baselines.hindsight.total_usd, "hindsight", {"color": "C2", "ls": ":"}),
    ]
    for value, name, style in lines:
        ax.axhline(value, label=f"{name} ({format_usd(value)})", **style)
    ax.set_xlim(0, None)
    ax.set(xlabel="AL batch size δ (% of N)", ylabel="total cost (USD)")
    ax.set_title(f"{summary.dataset}: MCAL against the baselines")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def format_usd(value: float) -> str:
    value = float(value)
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def format_cell(value: object) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(format_cell(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def summary_markdown(run: FinishedRun, images: list[str]) -> str:
    """The summary fields, the baselines and one row per round as markdown tables."""
    summary = run.summary
    cost = summary.cost_usd
    parts = [
        f"# MCAL report: {summary.dataset}\n",
        f"Total cost **{format_usd(cost.total)} USD** against "
        f"{format_usd(cost.human_only)} USD for human-only labeling; counts: "
        + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(summary.counts).items())
        + ".\n",
        f"Certified: {summary.error_text()}.\n",
    ]
    if summary.budget.usd is not None:
        text = summary.budget_text()  # "budget 20.00 USD stopped the loop ..."
        parts.append(f"{text[:1].upper()}{text[1:]}.\n")
    parts += [
        "\n".join(f"![{os.path.splitext(name)[0]}]({name})" for name in images) + "\n",
        "## Summary\n",
    ]
    fields = flatten({k: v for k, v in summary.to_json().items() if k != "baselines"})
    rows = [[k, format_usd(v) if k.startswith("cost_usd.") else v] for k, v in fields.items()]
    parts.append(markdown_table(["field", "value"], rows))
    baselines = summary.baselines
    if baselines is not None:
        rows = [
            [f"AL(δ = {100 * d:g}%)", f"{100 * d:g}", format_usd(u)]
            for d, u in al_points(baselines)
        ]
        for name, point in (("oracle_al", baselines.oracle_al), ("hindsight", baselines.hindsight)):
            rows.append([name, f"{100 * point.delta_fraction:g}", format_usd(point.total_usd)])
        rows.append(["human_only", "", format_usd(baselines.human_only)])
        rows.append(["MCAL", "", format_usd(cost.total)])
        parts += ["\n## Baselines\n", markdown_table(["method", "δ (% of N)", "total USD"], rows)]
    header = ["round", "model", "|B|", "next δ", "C* USD", "b_opt", "θ*", "stable", "stop"]
    header += ["spent USD", "device s"]
    rows = []
    for record in run.rounds:
        plan, lead = record.plan, record.candidates[record.lead]
        rows.append(
            [record.round, record.lead, lead.train_size, len(record.next_batch)]
            + [format_usd(plan.cost_star_usd), plan.b_opt, f"{plan.theta_star:.2f}"]
            + [plan.stable, record.stop, format_usd(record.spent_usd)]
            + [f"{lead.device_seconds:.1f}"]
        )
    parts += ["\n## Rounds\n", markdown_table(header, rows)]
    parts.append(f"\nStopped: {summary.stop_reason}\n")
    return "\n".join(parts)
