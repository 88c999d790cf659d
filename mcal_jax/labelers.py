"""Human labelers: where the gold-standard labels of T_plan, B, T_cert and the residual R come from.

MCAL buys every human label through a `Labeler`, at C_h dollars each (the C_h of Eq. 1 of
the paper). A run never reads the ground truth any other way: in simulation the ground
truth sits behind a `SimulatedLabeler`, which sells it at a price per label and can add
annotator noise; with real people, `mcal_jax.queue.QueueLabeler` sends the items out as
request files and reads their answers back. The one exception is the "true error" report
(`true_labels_for_report`, where a ground truth is known), which no decision of the run
may use.

A labeler whose people have not answered yet raises `LabelsAwaited` from ``label``: the
ledger then records nothing, and the run stops until the same command is run again.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mcal_jax.indices import as_int_array

# USD per label of the paper's two labeling services (Section 5 and Table 2).
PRICES_USD: dict[str, float] = {"amazon": 0.04, "satyam": 0.003}


def _presets() -> str:
    return ", ".join(f"{name!r} ({usd} USD)" for name, usd in PRICES_USD.items())


def usd_per_label(service: str | float) -> float:
    """The price of one human label in USD: a preset service name or a number.

    Accepts ``"amazon"``/``"satyam"`` (any case), a number, or a number written as a string
    (``"0.01"``, as it arrives from a command-line flag). A free labeler (0) is allowed,
    e.g. to measure device cost alone; negative, non-finite and unknown values are not.
    """
    if isinstance(service, bool) or not isinstance(service, str | int | float | np.number):
        raise TypeError(
            f"labeling service {service!r} ({type(service).__name__}): expected a preset "
            f"name ({_presets()}) or a price in USD per label"
        )
    if isinstance(service, str):
        name = service.strip().lower()
        if name in PRICES_USD:
            return PRICES_USD[name]
        try:
            price = float(name)
        except ValueError:
            raise ValueError(
                f"unknown labeling service {service!r}: expected one of {_presets()}, "
                "or a price in USD per label such as '0.01'"
            ) from None
    else:
        price = float(service)
    if not math.isfinite(price) or price < 0:
        raise ValueError(
            f"labeling price {service!r} USD per label: must be a finite number >= 0 "
            f"(or a preset: {_presets()})"
        )
    return price


_price_from = usd_per_label  # `SimulatedLabeler.__init__` has a parameter of the same name.


class LabelsAwaited(Exception):
    """The labels of a purchase were asked of people and are not in yet.

    Raised by ``Labeler.label`` before it returns anything, so the ledger records nothing;
    the message says how many labels are awaited and where to put them. Rerunning the same
    command asks again for the same purchase (same key, same items) and goes on once the
    answers are there.
    """

    def __init__(self, message: str, *, key: str, count: int):
        super().__init__(message)
        self.key = key
        self.count = count


@runtime_checkable
class Labeler(Protocol):
    """Anything that sells labels for items of the pool, identified by their pool indices."""

    usd_per_label: float

    def label(self, indices: np.ndarray, *, key: str = "") -> np.ndarray:
        """Human labels (int32, one per index, in the same order) for those pool indices.

        ``key`` names the purchase (the ledger's key, e.g. ``round3/train``), so that a
        labeler that sends the items out can name its request after it. Raises
        `LabelsAwaited` when the labels are not in yet.
        """
        ...


_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective mix of uint64 words (wraps modulo 2**64)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _uniform(seed: int, stream: int, indices: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats that depend only on (seed, stream, index), one per index.

    A counter-based hash rather than a sequential generator, so an item's draw does not
    depend on which other items were asked for, in which order, or how many times.
    """
    base = _splitmix64(np.array([seed % 2**64], _U64) ^ _U64(stream))
    bits = _splitmix64(base + indices.astype(_U64))
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53


class SimulatedLabeler:
    """Sells the ground truth of a simulated pool, optionally through noisy annotators.

    With ``error_rate`` e > 0, each item's label is wrong with probability e, and a wrong
    label is drawn uniformly from the other ``num_classes - 1`` classes. The noise is a
    fixed function of (seed, index): asking again for an item gives the same answer, as
    from a fixed pool of annotators, and a resumed run sees exactly the labels an
    uninterrupted one would have.

    Attributes:
      usd_per_label: the price of one label in USD.
      error_rate: the probability that a label is wrong.
      labels_served: the number of labels sold so far (each call to `label` counts every
        index it is given).
    """

    def __init__(
        self,
        true_labels: np.ndarray,
        num_classes: int,
        *,
        usd_per_label: float | str,
        error_rate: float = 0.0,
        seed: int = 0,
    ):
        truth = np.asarray(true_labels)
        if truth.ndim != 1 or not np.issubdtype(truth.dtype, np.integer):
            raise ValueError(
                f"SimulatedLabeler.true_labels: expected a 1-D integer array; got shape "
                f"{truth.shape}, dtype {truth.dtype}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
            raise ValueError(f"SimulatedLabeler.num_classes = {num_classes!r}: must be an int")
        bad = np.flatnonzero((truth < 0) | (truth >= num_classes))
        if num_classes < 1 or bad.size:
            where = f"; label {truth[bad[0]]} at index {bad[0]}" if bad.size else ""
            raise ValueError(
                f"SimulatedLabeler: true labels must lie in [0, num_classes = {num_classes}){where}"
            )
        numeric = isinstance(error_rate, int | float | np.number)
        if isinstance(error_rate, bool) or not (numeric and 0.0 <= error_rate <= 1.0):
            raise ValueError(
                f"SimulatedLabeler.error_rate = {error_rate!r}: must be a number in [0, 1]"
            )
        if error_rate > 0 and num_classes < 2:
            raise ValueError(
                f"SimulatedLabeler.error_rate = {error_rate}: a wrong label needs another "
                f"class, but num_classes = {num_classes}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"SimulatedLabeler.seed = {seed!r}: must be an int")
        self._truth = truth.astype(np.int32)
        self._truth.flags.writeable = False
        self.num_classes = int(num_classes)
        self.usd_per_label = _price_from(usd_per_label)
        self.error_rate = float(error_rate)
        self.seed = int(seed)
        self.labels_served = 0

    def __len__(self) -> int:
        return len(self._truth)

    def label(self, indices: npt.ArrayLike, *, key: str = "") -> np.ndarray:
        """Labels (int32) for the given pool indices, with this labeler's noise (``key``,
        the purchase's name, changes nothing here)."""
        del key
        indices = as_int_array(indices, "pool indices", size=len(self._truth))
        labels = self._truth[indices]
        if self.error_rate > 0:
            wrong = _uniform(self.seed, 0, indices) < self.error_rate
            # An offset in 1..K-1 picks one of the other classes uniformly.
            offsets = 1 + (_uniform(self.seed, 1, indices) * (self.num_classes - 1)).astype(
                np.int64
            )
            noisy = (labels + offsets) % self.num_classes
            labels = np.where(wrong, noisy, labels).astype(np.int32)
        self.labels_served += len(indices)
        return labels

    def true_labels_for_report(self, indices: npt.ArrayLike) -> np.ndarray:
        """The ground truth (int32) of those items, for simulation reports only.

        Only the final "true error" of a simulated run may read this; no decision of the
        run (what to buy, when to stop, which threshold) may, since a real run has no
        ground truth. It sells nothing and is not counted in `labels_served`.
        """
        return self._truth[as_int_array(indices, "pool indices", size=len(self._truth))].copy()
