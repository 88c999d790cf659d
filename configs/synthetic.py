r"""MCAL on a learnable synthetic image set: seconds on a CPU, for tests and quick checks.

  python -m launch.mcal --config=configs/synthetic.py --workdir=/tmp/mcal/synthetic

Argument after the colon: the number of items (default 3000).
"""

from configs import common


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    n = int(arg) if arg else 3000
    config = common.get_config()
    config.data.dataset = f"synthetic:n={n},shape=28x28x1,classes=10,seed=0"
    config.models = ("tiny",)
    config.mcal.test_fraction = 0.1
    config.mcal.delta0_fraction = 0.05
    config.mcal.max_rounds = 4
    config.train.epochs = 2
    config.train.batch_size = 64
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.1
    config.train.schedule = "cosine"
    config.train.crop_padding = 0
    config.train.horizontal_flip = False
    config.num_devices = 1
    return config.lock()
