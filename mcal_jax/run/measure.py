"""One model's round of measurement: train D(B) from scratch through the run's learner,
score U ∪ T with the metric M, measure the error profile on T (T_plan by default), and
price the device time (docs/algorithm.md, steps 2-3). MCAL's loop, its final labeling and
the AL(δ) baselines all measure through here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mcal_jax import profile as profile_lib
from mcal_jax import train as train_lib
from mcal_jax.learner import Learned
from mcal_jax.recipe import TrainConfig
from mcal_jax.run import state
from mcal_jax.run.prepare import Context
from mcal_jax.run.settings import Settings
from mcal_jax.scores import PoolScores, error_profile


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What one trained model measured in a round, and what its device time cost."""

    model: str
    learned: Learned
    profile: profile_lib.ErrorProfile
    train_size: int
    training_usd: float
    scoring_usd: float
    scored_items: int
    choice: profile_lib.MachineLabelingChoice  # step 10 applied to this model now, on T

    @property
    def scores(self) -> PoolScores:
        return self.learned.scores

    @property
    def certified_machine(self) -> int:
        """Items of U step 10 would machine-label with this model now if T certified."""
        return self.choice.num_machine


def measure(
    ctx: Context,
    model: str,
    train_indices: np.ndarray,
    train_labels: np.ndarray,
    unlabeled: np.ndarray,
    round_index: int,
    recipe: TrainConfig | None = None,
    teacher: PoolScores | None = None,
    ensemble: tuple = (),
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Measurement:
    """Trains ``model`` on the bought labels (with ``recipe``, default the rounds'
    ``settings.train``) through the run's learner, scores U = ``unlabeled`` and T, and
    measures ε_T(θ) with T's bought labels. A semi-supervised recipe also fits the
    ``teacher``'s (an earlier model's) most confident predictions on U ∪ T: the images of
    U and T are treated alike (ties broken by the run's tie order) and no label of either
    is used, so T stays a fair sample of U (docs/algorithm.md, step 2); without a teacher
    (round 1) it trains on B alone. The scores are the model's own, or the average of its
    predictions and those of the ``ensemble`` (other models' variables), over each image's
    views (its mirror with ``recipe.test_time_flip``, its moved copies with
    ``recipe.test_time_shift``). ``test`` (indices, labels) is T, by
    default the run's T_plan. Raises `train.DivergedError` (naming
    ``train.learning_rate``) when the scores are not finite, so nothing is planned or
    bought from a diverged model."""
    settings = ctx.settings
    recipe = recipe or settings.train
    test_indices, test_labels = ctx.test_set() if test is None else test
    to_score = np.concatenate([unlabeled, test_indices])
    pseudo = None
    if recipe.semi_supervised and teacher is not None:
        pseudo = teacher.pseudo_labels(to_score, recipe.pseudo_fraction, ctx.tie_order)
    learned = ctx.learner.learn(
        model,
        (train_indices, train_labels),
        recipe,
        score=to_score,
        seed=settings.round_seed(round_index),
        pseudo=pseudo,
        ensemble=ensemble,
    )
    scores = learned.scores
    if not scores.all_finite(to_score):
        raise train_lib.DivergedError(
            f"{model} trained on |B|={len(train_indices)} gives non-finite confidences: "
            f"lower train.learning_rate={recipe.learning_rate} or check the data"
        )
    profile = error_profile(scores, unlabeled, test_indices, test_labels)
    pricing = settings.pricing
    return Measurement(
        model=model,
        learned=learned,
        profile=profile,
        train_size=len(train_indices),
        training_usd=pricing.training_usd(model, learned.images_processed, learned.device_seconds),
        scoring_usd=pricing.scoring_usd(model, learned.forward_passes, learned.scoring_seconds),
        scored_items=len(to_score),
        choice=certified_choice(settings, scores, unlabeled, test_indices, test_labels),
    )


def measure_final(
    ctx: Context,
    model: str,
    train_indices: np.ndarray,
    train_labels: np.ndarray,
    unlabeled: np.ndarray,
    round_index: int,
    recipe: TrainConfig,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Measurement]:
    """The final classifier trained on the final labels with ``recipe`` (docs/algorithm.md,
    step 10): one measurement, or, for a semi-supervised recipe, a supervised teacher with
    the same recipe and then its student, which also fits the teacher's confident
    predictions on the items outside the training labels. The teacher is as strong as the
    student (a round's classifier, trained on a short recipe, is weaker and teaches
    little). The last measurement labels; with ``recipe.teacher_ensemble`` its scores
    average the student's and the teacher's predictions (over the student's views).
    ``test`` as for `measure`."""
    args = (ctx, model, train_indices, train_labels, unlabeled, round_index)
    if not recipe.semi_supervised:
        return [measure(*args, recipe, test=test)]
    # The teacher's scores only choose and label the student's pseudo-labeled items, the
    # most confident part of the pool, where the shifted views change little: it scores
    # without them (the student, which labels, scores with them).
    teacher_recipe = dataclasses.replace(recipe, semi_supervised=False, test_time_shift=0)
    teacher = measure(*args, teacher_recipe, test=test)
    ensemble = (teacher.learned.variables,) if recipe.teacher_ensemble else ()
    return [teacher, measure(*args, recipe, teacher.scores, ensemble, test=test)]


def certified_choice(
    settings: Settings,
    scores: PoolScores,
    unlabeled: np.ndarray,
    test_indices: np.ndarray,
    test_labels: np.ndarray,
) -> profile_lib.MachineLabelingChoice:
    """The machine-labeling threshold for U = ``unlabeled`` that T certifies under the
    run's ε, constraint and confidence: the error profile on the certificate's fine grid
    (`profile.CERTIFY_THETAS`), then `profile.choose_machine_threshold`."""
    profile = error_profile(
        scores, unlabeled, test_indices, test_labels, thetas=profile_lib.CERTIFY_THETAS
    )
    return profile_lib.choose_machine_threshold(
        profile,
        epsilon=settings.controller.epsilon,
        constraint=settings.controller.constraint,
        num_items=settings.num_items,
        confidence=settings.confidence,
    )


def charge(ctx: Context, stage: str, m: Measurement) -> None:
    """Records the device time of a measurement in the ledger, under fresh keys."""
    ledger = ctx.ledger
    ledger.charge(
        category="training",
        usd=m.training_usd,
        key=state.charge_key(ledger, stage, m.model, "training"),
        device_seconds=m.learned.device_seconds,
        images=m.learned.images_processed,
        model=m.model,
    )
    ledger.charge(
        category="scoring",
        usd=m.scoring_usd,
        key=state.charge_key(ledger, stage, m.model, "scoring"),
        device_seconds=m.learned.scoring_seconds,
        items=m.scored_items,
        model=m.model,
    )
