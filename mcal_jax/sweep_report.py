"""Sweep reports: one table of mean ± std over seeds per sweep point, and the paper's
Figs. 5–7 (AL total cost against δ, with MCAL and human-only as lines), per group.

``python -m launch.report --sweep=DIR`` calls :func:`sweep_report`.
"""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from mcal_jax.report import (
    REPORT_DIR,
    al_points,
    flatten,
    format_usd,
    markdown_table,
    read_run_json,
    save_figure,
)
from mcal_jax.summary import Summary, read_summary

# Sweep columns: (header, summary field, format).
_SWEEP_COLUMNS = (
    ("total USD", "cost_usd.total", "usd"),
    ("human-only USD", "cost_usd.human_only", "usd"),
    ("saved %", "savings_vs_human_only", "pct"),
    ("T %", "fractions.test", "pct"),
    ("B %", "fractions.train", "pct"),
    ("S %", "fractions.machine", "pct"),
    ("true error %", "error.true", "pct"),
    ("error bound %", "error.upper_bound", "pct"),
    ("rounds", "rounds", "num"),
)


def sweep_report(sweep_dir: str) -> list[str]:
    """Aggregates a sweep (one run workdir per subfolder) into ``sweep_dir/report/``.

    Points whose config.json differ only in ``seed`` form a group; each number is reported
    as mean ± std over the group's seeds (sample std, ddof = 1; the mean alone for one
    seed). Subfolders without summary.json (unfinished runs) are listed, not counted.
    Where runs hold AL baselines, ``cost_vs_delta_<g>.png`` draws the AL(δ) cost against δ
    with MCAL and human-only as horizontal lines (the paper's Figs. 5–7).
    """
    if not os.path.isdir(sweep_dir):
        raise FileNotFoundError(f"sweep directory {sweep_dir} not found")
    by_config: dict[str, dict] = {}
    unfinished: list[str] = []
    for name in sorted(os.listdir(sweep_dir)):
        point = os.path.join(sweep_dir, name)
        if name == REPORT_DIR or not os.path.isdir(point):
            continue
        summary = read_summary(os.path.join(point, "summary.json"))
        has_config = os.path.exists(os.path.join(point, "config.json"))
        found = {"summary.json": summary is not None, "config.json": has_config}
        missing = [f for f, there in found.items() if not there]
        if summary is None or missing:
            unfinished.append(f"{name} (no {' or '.join(missing)})")
            continue
        config = flatten(read_run_json(os.path.join(point, "config.json"), "sweep point"))
        config.pop("seed", None)
        values = _point_values(summary)
        key = json.dumps(config, sort_keys=True, default=str)
        by_config.setdefault(key, {"config": config, "points": []})["points"].append(values)
    if not by_config:
        raise ValueError(f"{sweep_dir} holds no finished run (a subfolder with summary.json)")
    groups = list(by_config.values())
    labels = _group_labels([g["config"] for g in groups])
    out = os.path.join(sweep_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    paths = []
    for index, (group, label) in enumerate(zip(groups, labels, strict=True), 1):
        if _al_deltas(group["points"]):
            fig = _plot_sweep_group(group["points"], label)
            paths.append(save_figure(fig, out, f"cost_vs_delta_{index}.png"))
    paths.append(os.path.join(out, "summary.md"))
    with open(paths[-1], "w") as f:
        f.write(_sweep_markdown(sweep_dir, groups, labels, unfinished, paths[:-1]))
    return paths


def _point_values(summary: Summary) -> dict:
    """The numbers of one run: summary fields by dotted name, AL baselines as ``al:<δ>``."""
    flat = flatten({k: v for k, v in summary.to_json().items() if k != "baselines"})
    values = {f: flat[f] for _, f, _ in _SWEEP_COLUMNS if flat.get(f) is not None}
    baselines = summary.baselines
    if baselines is not None:
        values.update({f"al:{delta!r}": usd for delta, usd in al_points(baselines)})
        values["oracle_al"] = baselines.oracle_al.total_usd
        values["hindsight"] = baselines.hindsight.total_usd
    return values


def _group_labels(configs: list[dict]) -> list[str]:
    """Each group named by the config fields whose values differ between groups."""
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    if not varying:
        return ["all points"] * len(configs)
    return [", ".join(f"{k}={c.get(k)}" for k in varying) for c in configs]


def _al_deltas(points: list[dict]) -> list[float]:
    return sorted({float(k[3:]) for p in points for k in p if k.startswith("al:")})


def _stats(points: list[dict], key: str) -> tuple[float, float, int] | None:
    values = [float(p[key]) for p in points if p.get(key) is not None]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std, len(values)


def _mean_std(stats: tuple[float, float, int] | None, kind: str) -> str:
    if stats is None:
        return "–"
    mean, std, n = stats
    scale, digits = {"usd": (1, 2), "pct": (100, 2), "num": (1, 1)}[kind]
    text = f"{scale * mean:.{digits}f}"
    return text if n < 2 else f"{text} ± {scale * std:.{digits}f}"


def _sweep_markdown(
    sweep_dir: str,
    groups: list[dict],
    labels: list[str],
    unfinished: list[str],
    images: list[str],
) -> str:
    parts = [f"# MCAL sweep: {sweep_dir}\n", "Mean ± std (ddof = 1) over seeds.\n"]
    header = ["group", "seeds"] + [c[0] for c in _SWEEP_COLUMNS]
    rows = [
        [label, len(g["points"])]
        + [_mean_std(_stats(g["points"], f), kind) for _, f, kind in _SWEEP_COLUMNS]
        for g, label in zip(groups, labels, strict=True)
    ]
    parts.append(markdown_table(header, rows))
    for group, label in zip(groups, labels, strict=True):
        points = group["points"]
        keys = [(f"AL(δ = {100 * d:g}%)", f"al:{d!r}") for d in _al_deltas(points)]
        keys += [(k, k) for k in ("oracle_al", "hindsight") if any(k in p for p in points)]
        if keys:
            keys += [("human_only", "cost_usd.human_only"), ("MCAL", "cost_usd.total")]
            rows = [[name, _mean_std(_stats(points, key), "usd")] for name, key in keys]
            parts += [f"\n## Baselines: {label}\n", markdown_table(["method", "total USD"], rows)]
    if images:
        names = [os.path.basename(p) for p in images]
        parts.append("\n" + "\n".join(f"![{n}]({n})" for n in names) + "\n")
    if unfinished:
        parts.append("\nNot counted (unfinished): " + ", ".join(unfinished) + "\n")
    return "\n".join(parts)


def _plot_sweep_group(points: list[dict], label: str) -> Figure:
    """AL(δ) total cost (mean ± std over seeds) against δ; MCAL and human-only as lines."""
    fig, ax = plt.subplots(figsize=(8, 5))
    al = [(100 * d, stats) for d in _al_deltas(points) if (stats := _stats(points, f"al:{d!r}"))]
    delta = np.array([d for d, _ in al])
    mean = np.array([s[0] for _, s in al])
    ax.errorbar(
        delta, mean, yerr=np.nan_to_num([s[1] for _, s in al]), fmt="o-", capsize=3, label="AL(δ)"
    )
    best = int(np.argmin(mean))
    ax.plot(delta[best], mean[best], "o", ms=14, mfc="none", mec="C1", label="cheapest δ")
    for key, name, style in (
        ("cost_usd.total", "MCAL", {"color": "C3", "lw": 2}),
        ("cost_usd.human_only", "human only", {"color": "k", "ls": "--"}),
        ("hindsight", "hindsight", {"color": "C2", "ls": ":"}),
    ):
        stats = _stats(points, key)
        if stats is not None:
            ax.axhline(stats[0], label=f"{name} ({format_usd(stats[0])})", **style)
            if np.isfinite(stats[1]):
                span = (stats[0] - stats[1], stats[0] + stats[1])
                ax.axhspan(*span, color=style["color"], alpha=0.1)
    ax.set(xlabel="AL batch size δ (% of N)", ylabel="total cost (USD)")
    ax.set_xlim(0, None)
    ax.set_title(f"{label}\n(mean ± std over {len(points)} seeds)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
