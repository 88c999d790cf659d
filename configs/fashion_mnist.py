r"""MCAL on Fashion-MNIST (70,000 items), the paper's first data set.

GPU, the paper's settings (ResNet-20 as its "RESNET18", 200 epochs per round, Amazon
prices, ε = 5%; about an hour on one H100):

  python -m launch.mcal --config=configs/fashion_mnist.py --workdir=/tmp/mcal/fmnist

CPU demo (`make demo`; a small ResNet-8, short schedule; about 10 minutes on 2 cores):

  python -m launch.mcal --config=configs/fashion_mnist.py:cpu --workdir=/tmp/mcal/fmnist_cpu

Arguments after the colon, comma-separated: `cpu` (the demo), `satyam` (0.003 USD labels),
`select` (choose among cnn18, resnet20 and resnet56 as the paper does).
"""

from configs import common


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    options = set(filter(None, arg.split(",")))
    unknown = options - {"cpu", "satyam", "select"}
    if unknown:
        raise ValueError(f"configs/fashion_mnist.py: unknown arguments {sorted(unknown)}")
    config = common.get_config()
    config.data.dataset = "fashion_mnist"
    config.train.horizontal_flip = True  # clothing is left-right symmetric
    if "satyam" in options:
        config.labeling.service = "satyam"
    if "select" in options:
        config.models = ("cnn18", "resnet20", "resnet56")
    if "cpu" in options:
        cpu(config)
    return config.lock()


def cpu(config) -> None:
    """Shrinks the experiment for 2 CPU cores: a ResNet-8, 8 epochs a round, SGD with a
    cosine schedule (a short schedule needs a larger step than the paper's Adam)."""
    config.models = ("small",)
    config.train.epochs = 8
    config.train.batch_size = 64
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.1
    config.train.weight_decay = 5e-4
    config.train.schedule = "cosine"
    config.train.crop_padding = 0
    config.train.horizontal_flip = False
    config.mcal.max_rounds = 12
    config.num_devices = 1
