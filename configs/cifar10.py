r"""MCAL on CIFAR-10 (60,000 items, train + test joined), the paper's second data set.

GPU, the paper's settings (ResNet-20 as its "RESNET18", 200 epochs a round, Adam with
÷10 steps, random crops with 4 pixels of padding and horizontal flips, Amazon prices,
ε = 5%); the data come from TFDS (`tfds build cifar10 --file_format=array_record` once):

  python -m launch.mcal --config=configs/cifar10.py --workdir=/tmp/mcal/c10

Expected runtime: several hours on one H100 (the paper's MCAL trains on 22% of the pool
here, against 6% for Fashion-MNIST, which takes about an hour); not yet measured.

CPU variant (a small ResNet-8, short schedule): about 20–30 minutes on 2 cores, estimated
from its per-round cost on a synthetic pool of CIFAR's shape (about a minute a round at
first, two to three minutes once B holds ~10,000 items; at most 12 rounds):

  python -m launch.mcal --config=configs/cifar10.py:cpu --workdir=/tmp/mcal/c10_cpu

Arguments after the colon, comma-separated: `cpu`, `satyam` (0.003 USD labels), `select`
(choose among cnn18, resnet20 and resnet56 as the paper does).

Sweeps (:func:`sweep`, same argument): the paper's 36-point grid (service × ε × model × 3
seeds, each with the AL(δ) baselines; see `configs/fashion_mnist.py`), or with `cpu` both
services × 2 seeds of the CPU variant:

  python -m launch.sweep --config=configs/cifar10.py --workdir=/tmp/sweeps/c10 \
      --config.num_devices=1
"""

from configs import common, fashion_mnist


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    return make_config("cifar10", arg)


def make_config(name: str, arg: str) -> "common.ml_collections.ConfigDict":
    """The CIFAR config for the TFDS dataset ``name`` (cifar10 or cifar100); random crops
    with 4 pixels of padding and flips (a mirrored scene is the same class) are the
    defaults of configs/common.py."""
    return common.paper_experiment(name, f"tfds:{name}", arg, cpu=cpu)


def cpu(config: "common.ml_collections.ConfigDict") -> None:
    """Shrinks the experiment for 2 CPU cores as the Fashion-MNIST demo does (a ResNet-8,
    8 epochs a round, SGD with a cosine schedule), keeping the cheap on-device flips."""
    fashion_mnist.cpu(config)
    config.train.horizontal_flip = True


def sweep(arg: str = "") -> list[dict]:
    """The paper's grid, or with `cpu` the CPU variant over seeds 0, 1, 2 (see get_config)."""
    get_config(arg)  # rejects unknown arguments
    return common.paper_sweep(arg)
