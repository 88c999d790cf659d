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


def read_summary(path: str | os.PathLike) -> Summary | None:
    """The `Summary` in ``path`` (a ``summary.json``), None when there is none; ValueError
    naming the file and the field when it is not one."""
    value = files.read_json(path)
    return None if value is None else Summary.from_json(value, os.fspath(path))
