"""The records of a ledger file, one JSON object per line, and how each is checked:

- ``{"kind": "purchase", "key", "purpose", "indices": [...], "labels": [...],
  "usd_per_label", "usd"}`` with purpose in ``PURPOSES``;
- ``{"kind": "charge", "key", "category", "usd", "details": {...}}`` with category in
  ``CATEGORIES`` and details such as ``device_seconds``, ``images`` or ``model``;
- ``{"kind": "move", "key", "purpose", "source", "indices": [...], "usd": 0}``: items
  bought for ``source`` that now serve ``purpose`` (a test item that active learning
  chose joins B). Its labels are the ones bought, paid once; the move costs nothing.
"""

from __future__ import annotations

import json
import math
from typing import TypeGuard

import numpy as np

from mcal_jax.indices import as_int_array

# "test": T_plan, the test set the rounds read; "certify": T_cert, bought once at the end to
# certify the machine labels (docs/algorithm.md, steps 1 and 10).
PURPOSES = ("test", "train", "certify", "residual")
CATEGORIES = ("training", "scoring")
TOTALS = (
    "human_labels_test",
    "human_labels_train",
    "human_labels_certify",
    "human_labels_residual",
    "human_labels",
    "training",
    "scoring",
    "total",
)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def dumps(record: dict) -> str:
    """A record as one compact JSON line (numpy values as plain ones)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=_json_default)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_usd(value: object) -> float | None:
    """`value` as a float if it is a finite number >= 0 (Python or numpy), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def validated(record: object) -> dict:
    """A record as read from a line, with its index and label lists as arrays; ValueError
    naming what is wrong with it."""

    def check(ok: bool, problem: str) -> None:
        if not ok:
            raise ValueError(problem)

    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    kind, key = record.get("kind"), record.get("key")
    check(kind in ("purchase", "charge", "move"), f"unknown record kind {kind!r}")
    check(isinstance(key, str) and key != "", f"bad key {key!r}")
    check(_is_number(record.get("usd")) and record["usd"] >= 0, f"bad usd in {key!r}")
    if kind == "charge":
        check(record.get("category") in CATEGORIES, f"bad category in charge {key!r}")
        check(isinstance(record.get("details"), dict), f"bad details in charge {key!r}")
        return record
    try:
        indices = as_int_array(record.get("indices"), "indices")
        labels = as_int_array(record.get("labels"), "labels") if kind == "purchase" else None
    except ValueError as e:
        raise ValueError(f"{kind} {key!r}: {e}") from None
    if kind == "move" or labels is None:
        check(record["usd"] == 0, f"move {key!r} costs {record['usd']} USD, not 0")
        check(
            record.get("purpose") in PURPOSES and record.get("source") in PURPOSES,
            f"bad purpose or source in move {key!r}",
        )
        return {**record, "indices": indices}
    check(record.get("purpose") in PURPOSES, f"bad purpose in purchase {key!r}")
    price = record.get("usd_per_label")
    if not (_is_number(price) and price >= 0):
        raise ValueError(f"bad usd_per_label in purchase {key!r}")
    check(len(indices) == len(labels), f"purchase {key!r}: indices and labels differ in length")
    check(bool(np.all(indices >= 0)), f"purchase {key!r}: negative index")
    check(
        math.isclose(record["usd"], price * len(indices), rel_tol=1e-9, abs_tol=1e-12),
        f"purchase {key!r}: usd {record['usd']} != {price} x {len(indices)} labels",
    )
    return {**record, "indices": indices, "labels": labels.astype(np.int32)}
