"""Preparing a run: everything it needs, built and checked before anything is paid for.

`prepare` loads the data, checks the settings and the class names against it, claims the
workdir (the config and the dataset's fingerprint must match an earlier start), learns the
class names from the people's first answers when nothing else names them, uploads the
pool and opens the ledger, in that order: a start that fails leaves no file behind that
would block the corrected command.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from mcal_jax import parallel
from mcal_jax import pool as pool_lib
from mcal_jax.data import load_dataset
from mcal_jax.dataset import Dataset
from mcal_jax.ledger import Ledger
from mcal_jax.run import labeling
from mcal_jax.run.settings import Settings
from mcal_jax.run.workdir import Workdir, dataset_fingerprint


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
    """A prepared run: its settings, files, pool, labeler and ledger, and the random draws
    of T's reserve and B0 (docs/algorithm.md, step 1; seeded, so a rerun draws the same).
    T is the first |T| items of ``reserve`` (in its random order): all of it with a fixed
    T, a first stage that may grow otherwise. The items of T are the ledger's test
    purchases (`test_set`)."""

    settings: Settings
    workdir: Workdir
    ledger: Ledger
    pool: pool_lib.DevicePool
    labeler: labeling.RunLabeler
    reserve: np.ndarray
    initial_batch: np.ndarray
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
        """T as it stands: (indices, labels) bought for it, less the items moved to B."""
        return self.ledger.bought("test")

    def test_stage(self, size: int) -> np.ndarray:
        """The first ``size`` items of the reserve, sorted: T at ``size``, but for those
        bought for B before T grew to them."""
        return np.sort(self.reserve[:size])

    def unlabeled(self, *bought: np.ndarray) -> np.ndarray:
        """U = X ∖ (T ∪ ``bought``): the sorted items outside T and the given sets."""
        mask = np.ones(self.num_items, bool)
        mask[self.test_set()[0]] = False
        for indices in bought:
            mask[indices] = False
        return np.flatnonzero(mask)


@dataclasses.dataclass(frozen=True)
class Split:
    """X split around a B taken from every item outside it, as active learning takes it:
    what is left of T as bought (``test``, with labels) and U, the rest. A run's items
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
        """The items active learning chooses B's next batch from: every item outside B, T
        and its reserve included. A chosen item of T joins B with the label T bought
        (`Ledger.move`); a chosen item of the reserve is bought for B, and T never takes
        it. So B is chosen without regard to which items T holds, and what is left of T is
        a random sample of what is left of X (docs/algorithm.md, step 1)."""
        return np.sort(np.concatenate([self.test[0], self.unlabeled]))


def load_data(config: ml_collections.ConfigDict) -> tuple[Dataset, np.random.Generator]:
    """The run's pool (``data.max_items`` of the data set, when set) and the seeded random
    generator, as it stands after drawing that subset; its next draw is T's reserve."""
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


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Context:
    """Loads the data, builds the settings, claims ``workdir`` and opens the ledger."""
    dataset, rng = load_data(config)
    settings = Settings.from_config(config, len(dataset))
    classes = labeling.check_classes(settings, dataset, config.data.classes)
    mesh = parallel.make_mesh(config.num_devices or None)
    files = Workdir(workdir)
    files.claim(config, dataset_fingerprint(dataset))

    n, reserve = settings.num_items, settings.max_test
    order = rng.permutation(n)
    if classes is None:  # T's first stage is the first purchase: its answers name them
        first_test = np.sort(order[: settings.num_test])
        classes = labeling.classes_from_first_answers(settings, files, dataset, first_test)
    return Context(
        settings=settings,
        workdir=files,
        ledger=files.open_ledger(),
        pool=pool_lib.upload(dataset, mesh, num_classes=len(classes)),
        labeler=labeling.make_labeler(
            settings, files, dataset, classes, configured=bool(config.data.classes.strip())
        ),
        reserve=order[:reserve],
        initial_batch=np.sort(order[reserve : reserve + settings.delta0]),
        dataset_name=dataset.name,
        classes=classes,
        paths=dataset.paths,
    )
