"""The run's state as typed records, and how it is rebuilt from what is on disk.

Each fact has one home:

- the ledger holds every purchase and every device charge;
- ``rounds.jsonl`` holds one `RoundRecord` per finished round: what each candidate
  measured and planned, which candidates go on, and the batch decided for the next round
  (``metrics.jsonl`` is a flat view of the same records, for people and plots);
- ``final.json`` holds the certified machine-labeling decision (`FinalLabeling`);
- ``baselines.json`` and ``summary.json`` the records a finished run leaves for its readers
  (:mod:`mcal_jax.summary`).

`RunState.replay` folds the round records into the controller's histories exactly as the
loop built them, so a resumed run decides what an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mcal_jax import controller
from mcal_jax.fit import PowerLawFit, TrainingCostModel
from mcal_jax.ledger import Ledger
from mcal_jax.profile import MachineLabelingChoice
from mcal_jax.records import History


def ints(values: npt.ArrayLike) -> tuple[int, ...]:
    """Integers of an array (numpy or jax) as a tuple of Python ints, for a record."""
    return tuple(int(v) for v in np.asarray(values).ravel())


def plan_to_json(plan: controller.Plan) -> dict[str, Any]:
    """A plan as JSON values: arrays as lists, its two fitted models as their fields."""
    value = {}
    for field in dataclasses.fields(plan):
        item = getattr(plan, field.name)
        if isinstance(item, PowerLawFit | TrainingCostModel):
            item = {
                f.name: np.asarray(getattr(item, f.name)).tolist() for f in dataclasses.fields(item)
            }
        elif isinstance(item, np.ndarray):
            item = item.tolist()
        value[field.name] = item
    return value


def plan_from_json(value: Mapping[str, Any]) -> controller.Plan:
    fields = dict(value)
    for name in ("b_grid", "cost_by_b", "theta_star_by_b", "cert_size_by_b"):
        fields[name] = np.asarray(fields[name])
    fit = fields["error_model"]
    fields["error_model"] = PowerLawFit(
        **{k: np.asarray(v, bool if k == "trusted" else np.float32) for k, v in fit.items()}
    )
    fields["cost_model"] = TrainingCostModel(**fields["cost_model"])
    return controller.Plan(**fields)


@dataclasses.dataclass(frozen=True)
class ModelRound:
    """One candidate model's round: what it measured on T_plan, what it cost, what it planned."""

    model: str
    train_size: int
    test_errors: tuple[int, ...]  # per θ: misclassified T items above τ_θ
    test_counts: tuple[int, ...]  # per θ: T items above τ_θ
    training_usd: float
    scoring_usd: float
    epochs: float  # passes over B (steps / ⌈|B| / batch⌉)
    images: int  # images through forward + backward
    device_seconds: float  # training, compile excluded
    scoring_seconds: float
    certified_machine: int  # items of U the round's model could machine-label on T_plan
    plan: controller.Plan
    test_size: int = 0  # |T_plan| the round measured on


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """One finished round of the loop (docs/algorithm.md, steps 2-9).

    ``candidates`` are the models trained this round (all of them are charged); ``kept``
    the ones that go on after architecture selection; ``lead`` the kept model with the
    cheapest plan, whose plan decides. ``labels_usd`` is what the labels first trained on
    this round cost (T and B0 in round 1); ``next_batch`` the items to buy for the next
    round (empty when ``stop``).
    """

    round: int
    lead: str
    kept: tuple[str, ...]
    candidates: Mapping[str, ModelRound]
    labels_usd: float
    spent_usd: float
    stop: bool
    reason: str
    next_batch: tuple[int, ...]

    @property
    def plan(self) -> controller.Plan:
        """The lead's plan."""
        return self.candidates[self.lead].plan

    @property
    def train_size(self) -> int:
        return self.candidates[self.lead].train_size

    def to_json(self) -> dict[str, Any]:
        value = dataclasses.asdict(self)
        for name, measured in self.candidates.items():
            value["candidates"][name]["plan"] = plan_to_json(measured.plan)
        return value

    def metrics(self, thetas: npt.ArrayLike) -> dict[str, Any]:
        """The round at a glance, one flat line of ``metrics.jsonl``: the lead's |B|, δ,
        plan, error profile, fitted curves, device seconds, and the spend so far."""
        lead, plan = self.candidates[self.lead], self.plan
        return {
            "round": self.round,
            "model": self.lead,
            "train_size": lead.train_size,
            "test_size": lead.test_size,
            "delta": len(self.next_batch),
            "cost_star_usd": plan.cost_star_usd,
            "b_opt": plan.b_opt,
            "theta_star": plan.theta_star,
            "stable": plan.stable,
            "no_longer_pays": plan.no_longer_pays,
            "certified_machine": lead.certified_machine,
            "cert_size": plan.cert_size,
            "saving_usd": plan.saving_usd,
            "saving_uncertainty_usd": plan.saving_uncertainty_usd,
            "stop": self.stop,
            "reason": self.reason,
            "error_profile": {
                "thetas": [float(t) for t in np.asarray(thetas)],
                "errors": list(lead.test_errors),
                "counts": list(lead.test_counts),
            },
            "fit": {
                name: np.asarray(getattr(plan.error_model, name)).tolist()
                for name in ("alpha", "gamma", "inv_k", "trusted")
            },
            "device_seconds": lead.device_seconds,
            "spent_usd": self.spent_usd,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RoundRecord:
        candidates = {
            name: ModelRound(**{**_tuples(c), "plan": plan_from_json(c["plan"])})
            for name, c in value["candidates"].items()
        }
        return cls(**{**_tuples(value), "candidates": candidates})


def _tuples(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples of a frozen record."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


@dataclasses.dataclass(frozen=True)
class RunState:
    """The rounds so far and what the loop carries from one round to the next."""

    rounds: tuple[RoundRecord, ...]
    histories: Mapping[str, History]  # per candidate, as the controller sees it
    active: tuple[str, ...]  # the candidates the next round trains

    @classmethod
    def start(cls, models: Sequence[str], thetas: npt.ArrayLike, delta0: int) -> RunState:
        histories = {m: History.start(thetas, delta0) for m in models}
        return cls((), histories, tuple(models))

    @classmethod
    def replay(
        cls,
        records: Sequence[RoundRecord],
        models: Sequence[str],
        thetas: npt.ArrayLike,
        delta0: int,
    ) -> RunState:
        """The state after ``records``, rebuilt as the loop built it."""
        state = cls.start(models, thetas, delta0)
        for record in records:
            histories = dict(state.histories)
            for name, measured in record.candidates.items():
                histories[name] = grow_history(histories[name], measured, record.labels_usd)
            state = state.after(record, histories)
        return state

    def after(self, record: RoundRecord, histories: Mapping[str, History]) -> RunState:
        return RunState((*self.rounds, record), dict(histories), record.kept)

    @property
    def stopped(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].stop

    @property
    def next_round(self) -> int:
        return len(self.rounds) + 1


def grow_history(history: History, measured: ModelRound, labels_usd: float) -> History:
    """``history`` after one more round of ``measured``, with its plan acted on."""
    grown = history.append_round(
        measured.train_size,
        np.asarray(measured.test_errors),
        np.asarray(measured.test_counts),
        measured.training_usd,
        measured.images,
        measured.scoring_usd,
        labels_usd=labels_usd,
        certified_machine=measured.certified_machine,
        test_size=measured.test_size or None,
    )
    return grown.record_plan(measured.plan)


@dataclasses.dataclass(frozen=True)
class FinalLabeling:
    """The certified decision of docs/algorithm.md, step 10, saved before the residual is
    bought: the scores of ``stage`` (the last round, or the final classifier trained after
    it) of ``model`` machine-label the items ``machine``."""

    stage: str
    model: str
    choice: MachineLabelingChoice
    machine: np.ndarray  # int64 pool indices

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "choice": dataclasses.asdict(self.choice),
            "machine": np.asarray(self.machine).tolist(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FinalLabeling:
        return cls(
            stage=str(value["stage"]),
            model=str(value["model"]),
            choice=MachineLabelingChoice(**value["choice"]),
            machine=np.asarray(value["machine"], np.int64),
        )


# ----------------------------------------------------------------------------- ledger keys


def train_purchase_key(round_index: int) -> str:
    """The ledger key of the labels a round trains on for the first time."""
    return f"round{round_index}/train"


def train_move_key(round_index: int) -> str:
    """The ledger key of the items of T_plan a round trains on for the first time (moved to B:
    active learning chose them, and their labels were bought for T)."""
    return f"round{round_index}/from_test"


TEST_PURCHASE_KEY = "test"  # T_plan, bought before round 1
CERT_PURCHASE_KEY = "certify"  # T_cert, bought at step 10

RESIDUAL_PURCHASE_KEY = "residual"


def charge_key(ledger: Ledger, stage: str, model: str, category: str) -> str:
    """A fresh key for a device charge of a stage (``round3``, ``final``): a stage redone
    after a restart really was paid for twice, so a redo charges under ``.../retry1``, …"""
    key = f"{stage}/{model}/{category}"
    retry = 0
    while ledger.has(key if not retry else f"{key}/retry{retry}"):
        retry += 1
    return key if not retry else f"{key}/retry{retry}"
