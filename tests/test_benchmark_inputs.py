"""Benchmarks refuse, by name and before any training, inputs they cannot measure."""

import numpy as np
import pytest

from benchmarks import learning_curve
from configs import synthetic
from mcal_jax.dataset import Dataset


def test_learning_curve_refuses_a_pool_without_labels(monkeypatch):
    # A pool without ground truth (an image folder without class subfolders): nothing to
    # train on or to measure the error against.
    unlabeled = Dataset(np.zeros((20, 4, 4, 1), np.uint8), None, 0, "folder:/photos")
    monkeypatch.setattr(learning_curve.data, "load_dataset", lambda *args, **kw: unlabeled)
    trained = []
    monkeypatch.setattr(learning_curve.train_lib, "train", lambda *a, **k: trained.append(a))
    with pytest.raises(ValueError, match="folder:/photos has no ground truth"):
        learning_curve.measure_curves(
            synthetic.get_config("600"), sizes=[5], min_steps=[0], held_out=5
        )
    assert trained == []
