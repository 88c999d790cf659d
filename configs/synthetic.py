r"""MCAL on a learnable synthetic image set: seconds on a CPU, for tests and quick checks.

  python -m launch.mcal --config=configs/synthetic.py --workdir=/tmp/mcal/synthetic

Argument after the colon: the number of items (default 3000).

Its sweep (:func:`sweep`): labeling service × ε × 2 seeds, 8 runs of 15–25 s each; the
whole sweep took 3.5 minutes on 2 CPU cores shared with other work:

  python -m launch.sweep --config=configs/synthetic.py --workdir=/tmp/sweep_syn
"""

from typing import Any

from configs import common
from mcal_jax import sweep as sweep_lib


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    n = int(arg) if arg else 3000
    config = common.get_config()
    # Four classes of moderate noise: the 5k-parameter `tiny` model learns them from a few
    # hundred labels in seconds (about 16% test error from 300 labels; chance is 75%).
    config.data.dataset = f"synthetic:n={n},shape=28x28x1,classes=4,seed=0,noise=0.8"
    config.models = ("tiny",)
    config.mcal.delta0_fraction = 0.05
    config.mcal.min_delta0_items = 0  # tiny pools for tests: δ0 is 5% of N
    config.mcal.max_rounds = 4
    config.train.epochs = 10
    config.train.batch_size = 32
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.3
    config.train.schedule = "cosine"
    config.train.crop_padding = 0
    config.train.horizontal_flip = False
    config.num_devices = 1
    return config.lock()


def sweep(arg: str = "") -> list[dict]:
    """A sweep small enough for a CPU: both labeling services × ε ∈ {5%, 10%} × 2 seeds."""
    del arg  # the number of items is set by get_config(arg)
    axes: dict[str, list[Any]] = {
        "labeling.service": ["amazon", "satyam"],
        "mcal.epsilon": [0.05, 0.1],
    }
    return sweep_lib.seeds(sweep_lib.product(axes), [0, 1])
