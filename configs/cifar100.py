r"""MCAL on CIFAR-100 (60,000 items, 100 classes), the paper's hardest data set.

GPU, the paper's settings (ResNet-20 as its "RESNET18", 200 epochs a round, random crops
with 4 pixels of padding and horizontal flips, Amazon prices, ε = 5%); the data come from
TFDS (`tfds build cifar100 --file_format=array_record` once):

  python -m launch.mcal --config=configs/cifar100.py --workdir=/tmp/mcal/c100

Expected runtime: several hours on one H100 (the paper's MCAL trains on 32% of the pool
with Amazon prices and 58% with Satyam's); not yet measured.

CPU variant (a small ResNet-8, short schedule): about 20–30 minutes on 2 cores, estimated
from its per-round cost on a synthetic pool of CIFAR's shape (about a minute a round at
first, two to three minutes once B holds ~10,000 items; at most 12 rounds):

  python -m launch.mcal --config=configs/cifar100.py:cpu --workdir=/tmp/mcal/c100_cpu

Arguments after the colon, comma-separated: `cpu`, `satyam` (0.003 USD labels), `select`
(choose among cnn18, resnet20 and resnet56 as the paper does).

Sweeps (:func:`sweep`, same argument): the paper's 36-point grid (service × ε × model × 3
seeds, each with the AL(δ) baselines; see `configs/fashion_mnist.py`), or with `cpu` both
services × 2 seeds of the CPU variant:

  python -m launch.sweep --config=configs/cifar100.py --workdir=/tmp/sweeps/c100 \
      --config.num_devices=1
"""

from configs import cifar10, common


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    return cifar10.make_config("cifar100", arg)


def sweep(arg: str = "") -> list[dict]:
    """The paper's grid, or with `cpu` the CPU variant over seeds 0, 1, 2 (see get_config)."""
    get_config(arg)  # rejects unknown arguments
    return cifar10.sweep(arg)
