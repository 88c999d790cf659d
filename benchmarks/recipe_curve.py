r"""How a training recipe's certified bill moves as B grows, on a finished run's own data.

    python -m benchmarks.recipe_curve --workdir=/tmp/sweeps/fmnist_cpu/seed=0 \
        --recipes=round,final --round_changes=min_steps=1600,crop_padding=2,horizontal_flip=true

The stop rules of step 9 (docs/algorithm.md) read the rounds' learning curve, while the
final classifier of step 10 labels: when the rounds' classifier keeps improving after the
final one has flattened, the run buys labels the final classifier cannot use. This
benchmark cuts the run's B at the sizes it had after each round (``--cuts`` for others),
in the order the labels were bought, trains each recipe on each cut from scratch, scores
U ∪ T_plan and certifies on what was left of T_plan then, as the rounds estimate it.
``round`` is the run's round recipe (with ``--round_changes``, TrainConfig fields,
applied), ``final`` the final recipe's
supervised classifier (the teacher of a semi-supervised final recipe, without its
ensemble). Each cut trains with the seed of the round that reached it, so the run's round
recipe reproduces that round's own classifier.

It prints, per recipe and |B|, the certified machine labels and the bill of stopping there,
C_h · (N − |S|) (device cost left out). It works on a copy of the run's ledger and never
writes the run's folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags

from mcal_jax.ledger import Ledger
from mcal_jax.recipe import TrainConfig
from mcal_jax.report import read_run_json
from mcal_jax.run import measure, state
from mcal_jax.run.prepare import Split, prepare

_WORKDIR = flags.DEFINE_string("workdir", None, "a finished (or stopped) MCAL run")
_RECIPES = flags.DEFINE_list("recipes", ["round", "final"], "round and/or final")
_CUTS = flags.DEFINE_list("cuts", None, "|B| to cut B at (default: |B| after each round)")
_ROUND_CHANGES = flags.DEFINE_list(
    "round_changes", [], "TrainConfig fields for the round recipe, e.g. min_steps=1600"
)
# What `prepare` reads of a run: its settings, data, purchases, and the rounds that
# account for those purchases (it refuses a ledger the rounds do not account for).
RUN_FILES = ("config.json", "dataset.json", "ledger.jsonl", "rounds.jsonl")


def parse_changes(changes: list[str]) -> dict[str, Any]:
    """``["min_steps=1600", "horizontal_flip=true"]`` → typed TrainConfig fields."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parsed: dict[str, Any] = {}  # JSON values
    for change in changes:
        name, sep, text = change.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--round_changes: {change!r} is not FIELD=VALUE of a TrainConfig")
        parsed[name] = json.loads(text)
    return parsed


def purchases(ledger: Ledger) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(round, indices, labels) of what each round added to B, in the order taken: the
    labels it bought, then the items of T_plan it moved to B."""
    records = {r["key"]: r for r in ledger.records() if r["kind"] in ("purchase", "move")}
    label_of = dict(zip(*(a.tolist() for a in ledger.bought("train")), strict=True))
    rounds: list[tuple[int, np.ndarray, np.ndarray]] = []
    number = 1
    while True:
        keys = (state.train_purchase_key(number), state.train_move_key(number))
        indices = [i for key in keys if key in records for i in records[key]["indices"]]
        if not indices:
            return rounds
        labels = [label_of[i] for i in indices]
        rounds.append((number, np.asarray(indices, np.int64), np.asarray(labels, np.int32)))
        number += 1


def recipe_curve(
    workdir: str,
    recipes: list[str],
    sizes: list[int] | None = None,
    round_changes: dict[str, Any] | None = None,
) -> list[dict]:
    """One row per recipe and cut of B: |B|, certified machine labels, θ, bound, bill."""
    config = read_run_json(os.path.join(workdir, "config.json"), f"{workdir}: not an MCAL run")
    with tempfile.TemporaryDirectory() as copy:
        for name in RUN_FILES:
            if os.path.exists(os.path.join(workdir, name)):  # no rounds yet: no rounds.jsonl
                shutil.copy(os.path.join(workdir, name), copy)
        ctx = prepare(ml_collections.ConfigDict(config), copy)
        settings = ctx.settings
        if len(settings.models) != 1:
            raise ValueError(
                f"{workdir}: {len(settings.models)} candidate models; give a run of one"
            )
        price = settings.controller.human_usd_per_label
        final = settings.final_train or settings.train
        choices = {
            "round": dataclasses.replace(settings.train, **(round_changes or {})),
            "final": dataclasses.replace(final, semi_supervised=False, teacher_ensemble=False),
        }
        unknown = set(recipes) - set(choices)
        if unknown:
            raise ValueError(f"--recipes: unknown {sorted(unknown)}; use round or final")
        bought = purchases(ctx.ledger)
        indices = np.concatenate([i for _, i, _ in bought])
        labels = np.concatenate([y for _, _, y in bought])
        reached = np.cumsum([len(i) for _, i, _ in bought])
        if sizes is None:
            sizes = [int(s) for s in reached]
        rows = []
        for size in sizes:
            if not 1 <= size <= len(indices):
                raise ValueError(f"--cuts: {size} is not in [1, |B| = {len(indices)}]")
            round_index = bought[int(np.searchsorted(reached, size))][0]
            train = indices[:size]
            split = Split.of(ctx, train)  # T_plan as it stood then: as bought, less B's
            for name in recipes:
                m = measure.measure(
                    ctx,
                    settings.models[0],
                    train,
                    labels[:size],
                    split.unlabeled,
                    round_index,
                    choices[name],
                    test=split.test,
                )
                machine = m.certified_machine
                rows.append(
                    {
                        "recipe": name,
                        "b": size,
                        "machine": machine,
                        "theta": m.choice.theta,
                        "bound": m.choice.upper_bound,
                        "bill_usd": price * (settings.num_items - machine),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: Sequence[str]) -> None:
    del argv
    assert _WORKDIR.value is not None  # a required flag
    sizes = [int(s) for s in _CUTS.value] if _CUTS.value else None
    rows = recipe_curve(_WORKDIR.value, _RECIPES.value, sizes, parse_changes(_ROUND_CHANGES.value))
    print("| recipe | \\|B\\| | certified | bill USD |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['recipe']} | {row['b']:,} | {row['machine']:,} | {row['bill_usd']:.2f} |")


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
