"""What a finished run leaves for its readers, as typed records: `Summary`
(``summary.json``, written by :mod:`mcal_jax.run.finish`) and `Comparison` (the baselines,
``baselines.json`` and the summary's ``baselines``, written by
:mod:`mcal_jax.run.baselines`).

Every reader goes through these records: ``from_json`` refuses a file with a field missing,
unknown or of the wrong type, naming the file and the field, so that no report quietly
shows a number another version of the file meant otherwise. The field names are those of
the JSON files (README.md, "What a run writes").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from mcal_jax import files

R = TypeVar("R")


def to_json(record: Any) -> Any:
    """A record as JSON values: nested records as objects, tuples as lists; a field whose
    default is None is left out while it is None."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {
            f.name: to_json(getattr(record, f.name))
            for f in dataclasses.fields(record)
            if not (f.default is None and getattr(record, f.name) is None)
        }
    if isinstance(record, Mapping):
        return {str(k): to_json(v) for k, v in record.items()}
    if isinstance(record, tuple | list):
        return [to_json(v) for v in record]
    return record


def from_json(cls: type[R], value: Any, source: str, field: str = "") -> R:
    """The record ``cls`` read from JSON ``value``; ValueError naming ``source`` (the file)
    and the field when one is missing, unknown or of the wrong type."""
    return _parse(cls, value, source, field)


def _parse(hint: Any, value: Any, source: str, field: str) -> Any:
    where = f"{source}: field {field!r}" if field else source
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {value!r}, not an object")
        fields = dataclasses.fields(hint)
        unknown = sorted(set(value) - {f.name for f in fields})
        if unknown:
            raise ValueError(f"{source}: unknown field {_join(field, unknown[0])!r}")
        hints = typing.get_type_hints(hint)
        parsed = {}
        for f in fields:
            name = _join(field, f.name)
            if f.name in value:
                parsed[f.name] = _parse(hints[f.name], value[f.name], source, name)
            elif f.default is dataclasses.MISSING:
                raise ValueError(
                    f"{source}: field {name!r} is missing (written by another version of "
                    "mcal_jax? rerunning the run's command writes it again)"
                )
        return hint(**parsed)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, value, source, field)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where} is {value!r}, not a list")
        return tuple(_parse(args[0], v, source, f"{field}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {value!r}, not an object")
        return {k: _parse(args[1], v, source, _join(field, k)) for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ValueError(f"{where} is {value!r}, not {getattr(hint, '__name__', hint)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# -------------------------------------------------------------------------- the baselines


@dataclasses.dataclass(frozen=True)
class ALResult:
    """One AL(δ) baseline run: its price, the "stop now" price after every round (with the
    round's classifier), and the price of stopping at the cheapest of those rounds. The
    prices are final labelings (with the final classifier, when the run trains one)."""

    delta_fraction: float
    delta: int
    total_usd: float
    rounds: int
    train_size: int
    machine: int
    stop_now_usd: tuple[float, ...]
    train_sizes: tuple[int, ...]
    best_round: int
    best_round_usd: float


@dataclasses.dataclass(frozen=True)
class OracleAL:
    """Oracle-assisted AL: the AL(δ) that ended cheapest."""

    delta_fraction: float
    total_usd: float


@dataclasses.dataclass(frozen=True)
class Hindsight:
    """AL(δ) stopped at its round of cheapest "stop now", for the best δ."""

    total_usd: float
    delta_fraction: float
    round: int


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The baselines of a run (docs/algorithm.md, "Baselines"): every AL(δ) so far, keyed
    by δ / N as written (``"0.05"``), human-only, oracle-assisted AL and hindsight."""

    al: Mapping[str, ALResult]
    human_only: float
    oracle_al: OracleAL
    hindsight: Hindsight

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, value: Any, source: str = "baselines") -> Comparison:
        return from_json(cls, value, source)


# ---------------------------------------------------------------------------- the summary


@dataclasses.dataclass(frozen=True)
class Counts:
    """Items by how they were labeled: T_plan, B, T_cert, machine-labeled, the residual."""

    test: int
    train: int
    certify: int
    machine: int
    residual: int


@dataclasses.dataclass(frozen=True)
class Fractions:
    """`Counts` as fractions of N."""

    test: float
    train: float
    certify: float
    machine: float
    residual: float


@dataclasses.dataclass(frozen=True)
class MachineFraction:
    """The share of N machine-labeled: what the last plan expected, and what was certified."""

    predicted: float
    certified: float


@dataclasses.dataclass(frozen=True)
class Costs:
    """What the run paid, by item (USD), and what labeling everything by hand would cost."""

    human_labels: float
    human_labels_test: float
    human_labels_train: float
    human_labels_certify: float
    human_labels_residual: float
    training: float
    scoring: float
    total: float
    human_only: float


@dataclasses.dataclass(frozen=True)
class ErrorBounds:
    """The machine labels' error: ``estimated``, ``upper_bound`` and ``true`` in the
    constraint's units; the bound and the true error also both ways: over all N items
    (``_overall``) and over the machine-labeled items alone (``_machine_subset``). Under
    ``overall`` a bound over N can be small while the machine labels themselves are mostly
    wrong: ``upper_bound_machine_subset`` says so. ``true``: None without a ground truth."""

    estimated: float
    upper_bound: float
    upper_bound_overall: float
    upper_bound_machine_subset: float
    confidence: float
    true: float | None
    true_overall: float | None
    true_machine_subset: float | None


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The certified machine-labeling threshold (docs/algorithm.md, step 10)."""

    theta: float
    confidence_threshold: float
    start_theta: float
    tested: int


@dataclasses.dataclass(frozen=True)
class Budget:
    """``mcal.budget_usd`` and what it bounded. It is a cap on the loop only: once the loop
    stops, T_cert, the final classifier and the residual's human labels are bought whatever
    the budget. ``usd`` is the cap (None: none was set); ``stopped_loop`` whether reaching it
    stopped the loop; ``loop_usd`` what the loop had spent when it stopped, ``after_loop_usd``
    what was paid after it, and ``beyond_usd`` how far the total went past the cap (0 when
    it did not; None without a cap)."""

    usd: float | None
    stopped_loop: bool
    loop_usd: float
    after_loop_usd: float
    beyond_usd: float | None

    @classmethod
    def of(cls, usd: float | None, stopped_loop: bool, loop_usd: float, total_usd: float) -> Budget:
        """The budget of a run that spent ``loop_usd`` in the loop and ``total_usd`` in all."""
        return cls(
            usd=usd,
            stopped_loop=stopped_loop,
            loop_usd=loop_usd,
            after_loop_usd=total_usd - loop_usd,
            beyond_usd=None if usd is None else max(0.0, total_usd - usd),
        )


def at_chance(upper_bound: float, num_machine: int, num_classes: int) -> bool:
    """Whether machine labels whose own error bound is ``upper_bound`` are no better than
    guessing among ``num_classes``: the overall constraint can certify a few such labels
    among many human ones, but they are then no evidence the classifier learned anything."""
    return num_machine > 0 and upper_bound >= 1 - 1 / num_classes


@dataclasses.dataclass(frozen=True)
class Summary:
    """``summary.json``: what a finished run did, cost and certified (README.md, "What a
    run writes"). ``baselines`` is there when the config asked for them."""

    dataset: str
    num_items: int
    classes: tuple[str, ...]
    epsilon: float
    constraint: str
    model: str
    counts: Counts
    fractions: Fractions
    machine_fraction: MachineFraction
    cost_usd: Costs
    savings_vs_human_only: float
    budget: Budget
    error: ErrorBounds
    threshold: Threshold
    rounds: int
    stop_reason: str
    certify_on: str
    usd_per_label: float
    cost_mode: str
    baselines: Comparison | None = None

    def to_json(self) -> dict[str, Any]:
        return to_json(self)

    @classmethod
    def from_json(cls, value: Any, source: str = "summary") -> Summary:
        return from_json(cls, value, source)

    @property
    def machine_labels_at_chance(self) -> bool:
        """The machine labels' own bound is no better than guessing (`at_chance`)."""
        bound = self.error.upper_bound_machine_subset
        return at_chance(bound, self.counts.machine, len(self.classes))

    def headline(self) -> str:
        """The run in one line: items, machine-labeled share, the bill against human-only,
        the error bound over all items and on the machine labels alone (with the true
        errors when known), and the budget when one was set."""
        cost, error, n = self.cost_usd, self.error, self.num_items
        parts = [
            f"{n} items, {100 * self.fractions.machine:.1f}% machine-labeled, total "
            f"{cost.total:.2f} USD vs {cost.human_only:.2f} USD human-only "
            f"({100 * self.savings_vs_human_only:.0f}% saved)",
            self.error_text(),
        ]
        if error.true_overall is not None and error.true_machine_subset is not None:
            parts.append(
                f"true error {error.true_overall:.4f} over all items, "
                f"{error.true_machine_subset:.4f} on the machine labels"
            )
        if self.budget.usd is not None:
            parts.append(self.budget_text())
        return "; ".join(parts)

    def error_text(self) -> str:
        """The certified bound both ways, saying when the machine labels are at chance."""
        error, machine = self.error, self.counts.machine
        text = (
            f"error bound {error.upper_bound_overall:.4f} over all {self.num_items} items "
            f"({self.constraint} constraint, ε = {self.epsilon:g}), "
            f"{error.upper_bound_machine_subset:.4f} on the {machine} machine labels alone"
        )
        if self.machine_labels_at_chance:
            chance = 1 - 1 / len(self.classes)
            text += (
                f" (at or above chance error {chance:.4f}: they are certified only through "
                "the overall constraint)"
            )
        return text

    def budget_text(self) -> str:
        """What the budget bounded: the loop, and what was bought after it regardless."""
        budget = self.budget
        if budget.usd is None:
            return "no budget set"
        why = "stopped the loop" if budget.stopped_loop else "did not stop the loop"
        text = (
            f"budget {budget.usd:.2f} USD {why} (spent {budget.loop_usd:.2f} USD); what "
            "came after the loop whatever the budget (T_cert, the residual, any final "
            f"classifier) cost {budget.after_loop_usd:.2f} USD more"
        )
        if budget.beyond_usd:
            text += f", {budget.beyond_usd:.2f} USD beyond the budget"
        return text


def read_summary(path: str | os.PathLike) -> Summary | None:
    """The `Summary` in ``path`` (a ``summary.json``), None when there is none; ValueError
    naming the file and the field when it is not one."""
    value = files.read_json(path)
    return None if value is None else Summary.from_json(value, os.fspath(path))
