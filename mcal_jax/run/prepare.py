"""Preparing a run: everything it needs, built and checked before anything is paid for.

`prepare` loads the data, checks the settings and the class names against it, claims the
workdir (the config and the dataset's fingerprint must match an earlier start), checks
that its files agree (`integrity`), learns the class names from the people's first
answers when nothing else names them, places the pool (on the devices or on the host,
``data.placement``) and opens the ledger, in that order: a start that fails leaves no file
behind that would block the corrected command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections
import numpy as np

from mcal_jax import parallel, scoring
from mcal_jax import pool as pool_lib
from mcal_jax.data import load_dataset
from mcal_jax.dataset import Dataset
from mcal_jax.learner import FlaxLearner, Learner
from mcal_jax.ledger import Ledger
from mcal_jax.run import integrity, labeling
from mcal_jax.run.settings import Settings
from mcal_jax.run.workdir import Workdir, dataset_fingerprint


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
    """A prepared run: its settings, files, learner, labeler and ledger, and the random
    draws of step 1 (seeded, so a rerun draws the same; docs/algorithm.md, steps 1 and 10).

    One random order of the pool gives T_plan (its first |T_plan| items), B0 (the next δ0)
    and ``reserve``, the rest in that order: T_cert is the first items of the reserve that
    B has not taken, bought at the end (`cert_candidates`). ``tie_order`` ranks every
    item in a second, independent random order; it breaks ties of confidence wherever
    items are ranked (the next batch, pseudo-labels), the same way for every item.
    """

    settings: Settings
    workdir: Workdir
    ledger: Ledger
    learner: Learner
    labeler: labeling.RunLabeler
    plan_test: np.ndarray  # T_plan as drawn, sorted
    initial_batch: np.ndarray
    reserve: np.ndarray  # the other items, in the random order T_cert is taken from
    tie_order: np.ndarray  # [N] int64: each item's rank in the tie-breaking order
    dataset_name: str
    classes: tuple[str, ...]  # class k is classes[k]
    paths: tuple[str, ...]  # each item's file in its folder; () when not read from files

    @property
    def num_items(self) -> int:
        return self.settings.num_items

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """T_plan as it stands: (indices, labels) bought for it, less the items moved to B."""
        return self.ledger.bought("test")

    def outside(self, *sets: np.ndarray) -> np.ndarray:
        """The sorted items outside T_plan and the given sets (e.g. B): U during the loop,
        and what step 10 splits into T_cert, S and R."""
        mask = np.ones(self.num_items, bool)
        mask[self.test_set()[0]] = False
        for indices in sets:
            mask[indices] = False
        return np.flatnonzero(mask)

    def cert_candidates(self, size: int, taken: np.ndarray) -> np.ndarray:
        """T_cert of ``size`` items: the first ``size`` items of the reserve, in its random
        order, that are not in ``taken`` (B), sorted. Nothing in the loop depends on the
        reserve's order, so given B these are a uniform sample of what is left."""
        left = self.reserve[~np.isin(self.reserve, taken)]
        return np.sort(left[:size])


@dataclasses.dataclass(frozen=True)
class Split:
    """X split around a B taken from every item outside it, as active learning takes it:
    what is left of T_plan as bought (``test``, with labels) and U, the rest. A run's items
    after a round, an AL baseline's, or a run's at an earlier |B|."""

    test: tuple[np.ndarray, np.ndarray]
    unlabeled: np.ndarray

    @classmethod
    def of(cls, ctx: Context, labeled: np.ndarray) -> Split:
        tested, tested_labels = ctx.ledger.purchased("test")
        left = ~np.isin(tested, labeled)
        mask = np.ones(ctx.num_items, bool)
        mask[labeled] = False
        mask[tested] = False
        return cls((tested[left], tested_labels[left]), np.flatnonzero(mask))

    @property
    def candidates(self) -> np.ndarray:
        """The items active learning chooses B's next batch from: every item outside B,
        T_plan's included. A chosen item of T_plan joins B with the label it was bought
        with (`Ledger.move`). So B is chosen without regard to which items T_plan holds,
        and what is left of T_plan is a random sample of what is left of X, as U is
        (docs/algorithm.md, step 1)."""
        return np.sort(np.concatenate([self.test[0], self.unlabeled]))


def load_data(config: ml_collections.ConfigDict) -> tuple[Dataset, np.random.Generator]:
    """The run's pool (``data.max_items`` of the data set, when set) and the seeded random
    generator, as it stands after drawing that subset; its next draws are the run's two
    random orders (docs/algorithm.md, step 1)."""
    dataset = load_dataset(
        config.data.dataset,
        split=config.data.split,
        data_dir=config.data.data_dir,
        image_shape=config.data.image_shape,
    )
    rng = np.random.default_rng(config.seed)
    if config.data.max_items < 0:
        raise ValueError(f"invalid config: data.max_items={config.data.max_items} must be ≥ 0")
    if config.data.max_items and config.data.max_items < len(dataset):
        dataset = dataset.subset(np.sort(rng.choice(len(dataset), config.data.max_items, False)))
    return dataset, rng


def prepare(
    config: ml_collections.ConfigDict,
    workdir: str,
    make_learner: Callable[[Dataset], Learner] | None = None,
) -> Context:
    """Loads the data, builds the settings, claims ``workdir`` and opens the ledger. The
    run trains with ``make_learner(pool)``, by default the Flax learner on the devices."""
    dataset, rng = load_data(config)
    settings = Settings.from_config(config, len(dataset))
    _check_views(settings, dataset)
    classes = labeling.check_classes(settings, dataset, config.data.classes)
    files = Workdir(workdir)
    files.claim(config, dataset_fingerprint(dataset))
    ledger = files.find_ledger()
    integrity.check(files.on_disk(ledger))  # before anything is bought or asked for

    n, num_test, delta0 = settings.num_items, settings.num_test, settings.delta0
    order = rng.permutation(n)
    tie_order = np.empty(n, np.int64)
    tie_order[rng.permutation(n)] = np.arange(n)
    plan_test = np.sort(order[:num_test])
    if classes is None:  # T_plan is the first purchase: its answers name them
        classes = labeling.classes_from_first_answers(settings, files, dataset, plan_test)
    if make_learner is None:
        mesh = parallel.make_mesh(config.num_devices or None)
        where = settings.placement
        learner: Learner = FlaxLearner(
            pool_lib.place(
                dataset, mesh, where.placement, where.device_memory_gb, num_classes=len(classes)
            ),
            metric=settings.metric,
            score_batch_size=settings.score_batch_size,
            compute_dtype=settings.train.compute_dtype,
        )
    else:
        learner = make_learner(dataset)
    return Context(
        settings=settings,
        workdir=files,
        ledger=files.open_ledger() if ledger is None else ledger,
        learner=learner,
        labeler=labeling.make_labeler(
            settings,
            files,
            dataset,
            classes,
            configured=bool(config.data.classes.strip()),
            folder=config.data.dataset.removeprefix("folder:") if dataset.paths else "",
        ),
        plan_test=plan_test,
        initial_batch=np.sort(order[num_test : num_test + delta0]),
        reserve=order[num_test + delta0 :],
        tie_order=tie_order,
        dataset_name=dataset.name,
        classes=classes,
        paths=dataset.paths,
    )


def _check_views(settings: Settings, dataset: Dataset) -> None:
    """Refuses, before anything is bought, a test-time shift that moves the images out of
    their frame (`scoring.shift_problem`)."""
    shape = np.shape(dataset.images)[1:]
    for name, recipe in (("train", settings.train), ("final_train", settings.final_train)):
        if recipe is None:
            continue
        problem = scoring.shift_problem(recipe.test_time_shift, shape)
        if problem:
            raise ValueError(
                f"{name}.test_time_shift={recipe.test_time_shift}: {problem} ({dataset.name})"
            )
