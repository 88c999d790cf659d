"""A run's settings, checked before anything is paid for.

`Settings.from_config` turns the config file's fields into the typed records the run
uses (the controller's `ControllerConfig`, the trainer's `TrainConfig`, the `Pricing` of
device time, the sizes of T_plan and B0) and raises one ValueError that names the invalid
fields by their config names (of the controller's own fields, `ControllerConfig` reports
the first invalid one). A number that is NaN or infinite is refused first, by its name,
whatever the field. Every price (labels, device time, image-epochs) must be ≥ 0, and a
label's or image-epoch's price times N must stay a finite number, so that no charge of the
run can fail after labels are bought. The run builds the settings right after loading the
data (the sizes depend on N) and before it claims the workdir, opens the ledger or writes
a file: a refused setting leaves nothing that would block the corrected command.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import ml_collections

from mcal_jax import costs, models, placement, scoring
from mcal_jax.controller import ControllerConfig
from mcal_jax.placement import PlacementSettings
from mcal_jax.recipe import TrainConfig
from mcal_jax.records import InvalidFieldError
from mcal_jax.run import service
from mcal_jax.run.service import LabelingSettings

# Where the certificate's test labels come from (docs/algorithm.md, step 10).
CERTIFY_ON = ("reserve", "plan")

# Where each ControllerConfig field comes from in the config file.
_CONTROLLER_SOURCES = {
    "num_items": "data",
    "num_test": "mcal.plan_test_fraction",
    "epsilon": "mcal.epsilon",
    "constraint": "mcal.constraint",
    "human_usd_per_label": "labeling.service",
    "delta0": "mcal.delta0_fraction",
    "min_delta": "mcal.min_delta_fraction",
    "stability_tolerance": "mcal.stability_tolerance",
    "batch_slack": "mcal.batch_slack",
    "min_rounds_for_stability": "mcal.min_rounds_for_stability",
    "budget_usd": "mcal.budget_usd",
    "max_rounds": "mcal.max_rounds",
    "confidence": "mcal.confidence",
    "plan_replicates": "mcal.plan_replicates",
    "seed": "seed",
    "train_epochs": "train.epochs",
    "train_min_images": "train.min_steps",
}


@dataclasses.dataclass(frozen=True)
class BaselineSettings:
    """AL(δ) for δ = each fraction of N, at most ``max_rounds`` rounds each."""

    delta_fractions: tuple[float, ...]
    max_rounds: int


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a run decides with, typed and checked."""

    controller: ControllerConfig
    train: TrainConfig
    final_train: TrainConfig | None  # the final classifier's recipe; None: the last round's
    pricing: costs.Pricing
    models: tuple[str, ...]
    seed: int
    metric: str
    score_batch_size: int
    confidence: float  # 1 − α of the certified bound
    certify_on: str  # "reserve": T_cert, bought at the end; "plan": T_plan (the peeking variant)
    selection_rounds: int
    usd_per_label: float
    label_error_rate: float
    baselines: BaselineSettings | None  # None: no baselines
    labeling: LabelingSettings
    placement: PlacementSettings = PlacementSettings()

    @property
    def num_items(self) -> int:
        return self.controller.num_items

    @property
    def num_test(self) -> int:
        """|T_plan| at the start."""
        return self.controller.num_test

    @property
    def delta0(self) -> int:
        return self.controller.delta0

    def round_seed(self, round_index: int) -> int:
        """The seed of a round's training and scoring, shared by MCAL and its baselines."""
        return self.seed * 1000 + round_index

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, num_items: int) -> Settings:
        """The settings of ``config`` for a pool of ``num_items`` items; one ValueError
        naming the invalid fields by their config names."""
        not_finite = [
            f"{name}={value}: must be a finite number"
            for name, value in _numbers(config)
            if not math.isfinite(value)
        ]
        if not_finite:  # the checks below compare and round numbers: NaN would slip past
            raise _invalid(not_finite)
        problems: list[str] = []
        m = config.mcal

        def fraction(name: str, value: float) -> None:
            if not 0 < value < 1:
                problems.append(f"{name}={value} must lie in (0, 1)")

        fraction("mcal.plan_test_fraction", m.plan_test_fraction)
        fraction("mcal.delta0_fraction", m.delta0_fraction)
        fraction("mcal.min_delta_fraction", m.min_delta_fraction)
        fraction("mcal.confidence", m.confidence)
        if not (isinstance(m.min_plan_test_items, int) and m.min_plan_test_items >= 1):
            problems.append(
                f"mcal.min_plan_test_items={m.min_plan_test_items} must be an integer ≥ 1"
            )
        if not (isinstance(m.min_delta0_items, int) and m.min_delta0_items >= 0):
            problems.append(f"mcal.min_delta0_items={m.min_delta0_items} must be an integer ≥ 0")
        num_test = max(round(m.plan_test_fraction * num_items), m.min_plan_test_items)
        delta0 = max(1, round(m.delta0_fraction * num_items), m.min_delta0_items)
        if num_test + delta0 > num_items // 2:
            problems.append(
                f"|T_plan| = {num_test} (mcal.plan_test_fraction={m.plan_test_fraction}, at "
                f"least mcal.min_plan_test_items={m.min_plan_test_items}) and δ0 = {delta0} "
                "(mcal.delta0_fraction, at least mcal.min_delta0_items) take more than half "
                f"of the {num_items} items: the "
                "pool is too small for these settings"
            )
        if m.certify_on not in CERTIFY_ON:
            problems.append(f"mcal.certify_on={m.certify_on!r}: use one of {CERTIFY_ON}")
        if m.metric not in scoring.METRICS:
            problems.append(f"mcal.metric={m.metric!r}: use one of {scoring.METRICS}")
        if not (isinstance(m.selection_rounds, int) and m.selection_rounds >= 1):
            problems.append(f"mcal.selection_rounds={m.selection_rounds} must be an integer ≥ 1")
        if not 0 <= config.labeling.error_rate < 1:
            problems.append(f"labeling.error_rate={config.labeling.error_rate} must lie in [0, 1)")
        labeling, usd_per_label, priced = service.labeling(config, num_items, problems)
        placed = placement.check(config.data.placement, config.data.device_memory_gb, problems)
        names = tuple(config.models)
        unknown = [name for name in names if name not in models.MODEL_NAMES]
        if unknown or not names:
            problems.append(f"models={names}: choose from {models.MODEL_NAMES}")
        if config.score_batch_size < 1:
            problems.append(f"score_batch_size={config.score_batch_size} must be ≥ 1")
        pricing = _pricing(config, names, num_items, problems)
        baselines = _baselines(config, problems)
        final_train = None
        try:
            train = TrainConfig(**_train_fields(config))
        except ValueError as error:
            problems.append(str(error))
        else:  # the final classifier: train's recipe with final_train's fields that are set
            overrides = {k: v for k, v in config.final_train.items() if v is not None}
            try:
                final_train = dataclasses.replace(train, **overrides) if overrides else None
            except ValueError as error:  # "train.x=… is not valid"
                problems.append(f"final_{error}")
        if config.train.teacher_ensemble:
            problems.append(
                "train.teacher_ensemble=True: a round's teacher is the previous round's "
                "scores, not a model to average with; set final_train.teacher_ensemble"
            )
        if final_train and final_train.teacher_ensemble and not final_train.semi_supervised:
            problems.append(
                "final_train.teacher_ensemble=True needs final_train.semi_supervised=True "
                "(only a semi-supervised final classifier has a teacher)"
            )

        # Images a future round puts through per labeled image: a semi-supervised round
        # (after round 1, which has no teacher) adds unlabeled_ratio pseudo-labeled ones.
        per_image = 1 + (config.train.unlabeled_ratio if config.train.semi_supervised else 0)
        controller_fields = dict(
            num_items=num_items,
            num_test=num_test,
            epsilon=m.epsilon,
            constraint=m.constraint,
            human_usd_per_label=usd_per_label,
            delta0=delta0,
            min_delta=max(1, round(m.min_delta_fraction * num_items)),
            train_epochs=float(config.train.epochs * per_image),
            train_min_images=float(config.train.min_steps * config.train.batch_size * per_image),
            stability_tolerance=m.stability_tolerance,
            batch_slack=m.batch_slack,
            min_rounds_for_stability=m.min_rounds_for_stability,
            budget_usd=m.budget_usd,
            max_rounds=m.max_rounds,
            confidence=m.confidence,
            plan_replicates=m.plan_replicates,
            seed=config.seed,
        )
        try:
            controller = ControllerConfig(**controller_fields)
        except InvalidFieldError as error:
            if priced or error.field != "human_usd_per_label":
                problems.append(_controller_problem(config, error))
        if problems:
            raise _invalid(problems)
        return cls(
            controller=controller,
            train=train,
            final_train=final_train,
            pricing=pricing,
            models=names,
            seed=int(config.seed),
            metric=m.metric,
            score_batch_size=int(config.score_batch_size),
            confidence=float(m.confidence),
            certify_on=m.certify_on,
            selection_rounds=int(m.selection_rounds),
            usd_per_label=usd_per_label,
            label_error_rate=float(config.labeling.error_rate),
            baselines=baselines,
            labeling=labeling,
            placement=placed,
        )


def _invalid(problems: list[str]) -> ValueError:
    return ValueError("invalid config:\n  " + "\n  ".join(problems))


def _numbers(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float of ``config`` (in sections and tuples too) as (config name, value)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            yield from _numbers(value, f"{name}.")
        elif isinstance(value, list | tuple):
            for k, item in enumerate(value):
                if isinstance(item, float):
                    yield f"{name}[{k}]", item
        elif isinstance(value, float):
            yield name, value


def _controller_problem(config: ml_collections.ConfigDict, error: InvalidFieldError) -> str:
    """The controller's complaint in the config's terms: the field and the value given."""
    source = _CONTROLLER_SOURCES[error.field]
    given = config
    for part in source.split("."):
        given = given.get(part) if isinstance(given, ml_collections.ConfigDict) else None
    if isinstance(given, ml_collections.ConfigDict):
        given = None  # a derived value (N comes from the data): show the controller's
    shown = f"{source}={given!r}" if given is not None else source
    if given is None or given != error.value:
        shown += f" (ControllerConfig.{error.field} = {error.value!r})"
    return f"{shown}: must be {error.wanted}"


def _train_fields(config: ml_collections.ConfigDict) -> dict:
    fields = config.train.to_dict()
    fields["decay_epochs"] = tuple(fields["decay_epochs"])
    return fields


def _pricing(
    config: ml_collections.ConfigDict, names: tuple[str, ...], num_items: int, problems: list[str]
) -> costs.Pricing:
    cost = config.cost
    if cost.mode not in costs.COST_MODES:
        problems.append(f"cost.mode={cost.mode!r}: use one of {costs.COST_MODES}")
    rates = dict(cost.usd_per_image_epoch)
    fraction = cost.scoring_fraction_of_image_epoch
    wrong = [
        *(
            costs.price_problem(f"cost.usd_per_device_hour.{k}={v}", v)
            for k, v in cost.usd_per_device_hour.items()
        ),
        *(
            costs.price_problem(f"cost.usd_per_image_epoch.{k}={v}", v, num_items)
            for k, v in rates.items()
        ),
        costs.price_problem(f"cost.scoring_fraction_of_image_epoch={fraction}", fraction)
        # scoring every item once costs this fraction of the dearest image-epoch
        or costs.price_problem(
            f"cost.scoring_fraction_of_image_epoch={fraction}",
            fraction * max(rates.values(), default=0.0),
            num_items,
        ),
    ]
    problems.extend(w for w in wrong if w)
    rate = costs.device_usd_per_hour(cost.usd_per_device_hour)
    if rate is None and cost.mode == "measured":
        problems.append(
            "cost.usd_per_device_hour lists neither this device's kind nor its platform; "
            "add a price for it"
        )
    for name in names if cost.mode == "per_image_epoch" else ():
        if name not in cost.usd_per_image_epoch:
            problems.append(f"cost.usd_per_image_epoch has no rate for model {name!r}")
    return costs.Pricing(
        mode=cost.mode,
        usd_per_device_hour=rate or 0.0,
        usd_per_image_epoch=rates,
        scoring_fraction_of_image_epoch=float(cost.scoring_fraction_of_image_epoch),
    )


def _baselines(config: ml_collections.ConfigDict, problems: list[str]) -> BaselineSettings | None:
    b = config.baselines
    fractions = tuple(float(f) for f in b.delta_fractions)
    bad = [f for f in fractions if not 0 < f < 1]
    if bad or not fractions:
        problems.append(f"baselines.delta_fractions={fractions}: each must lie in (0, 1)")
    if b.max_rounds < 1:
        problems.append(f"baselines.max_rounds={b.max_rounds} must be ≥ 1")
    return BaselineSettings(fractions, int(b.max_rounds)) if b.run else None
