r"""MCAL on Fashion-MNIST (70,000 items), the paper's first data set.

GPU, the paper's settings (ResNet-20 as its "RESNET18", 200 epochs per round, Amazon
prices, ε = 5%; about an hour on one H100):

  python -m launch.mcal --config=configs/fashion_mnist.py --workdir=/tmp/mcal/fmnist

CPU demo (`make demo`; a small ResNet-8, short schedule; about 7 minutes on 2 cores):

  python -m launch.mcal --config=configs/fashion_mnist.py:cpu --workdir=/tmp/mcal/fmnist_cpu

Arguments after the colon, comma-separated: `cpu` (the demo), `satyam` (0.003 USD labels),
`select` (choose among cnn18, resnet20 and resnet56 as the paper does).

Sweeps (:func:`sweep`, same argument):

  python -m launch.sweep --config=configs/fashion_mnist.py --workdir=/tmp/sweeps/fmnist \
      --config.num_devices=1
  python -m launch.sweep --config=configs/fashion_mnist.py:cpu --workdir=/tmp/sweeps/fmnist_cpu

The first is the paper's ablation grid: 36 runs, each MCAL plus the AL(δ) baselines (see
`configs.common.paper_sweep`); on a machine with several GPUs `--config.num_devices=1`
runs one point per GPU. The second, 4 runs of the CPU demo (both services × 2 seeds), takes about
40 minutes on 2 cores; `configs/synthetic.py`'s sweep is the one that fits in a few minutes.
"""

from configs import common


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    return common.paper_experiment("fashion_mnist", "fashion_mnist", arg, cpu=cpu)


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


def sweep(arg: str = "") -> list[dict]:
    """The paper's grid (`configs.common.paper_sweep`); with `cpu`, both services × 2
    seeds of the CPU demo. The points set the service and the models, so `satyam` and
    `select` change nothing here."""
    get_config(arg)  # rejects unknown arguments
    return common.paper_sweep(arg)
