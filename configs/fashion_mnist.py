r"""MCAL on Fashion-MNIST (70,000 items), the paper's first data set.

GPU, the paper's settings (ResNet-20 as its "RESNET18", 200 epochs per round, Amazon
prices, ε = 5%; about an hour on one H100):

  python -m launch.mcal --config=configs/fashion_mnist.py --workdir=/tmp/mcal/fmnist

CPU demo (`make demo`; a small ResNet-8, short schedule; about 10 minutes on 2 cores):

  python -m launch.mcal --config=configs/fashion_mnist.py:cpu --workdir=/tmp/mcal/fmnist_cpu

Arguments after the colon, comma-separated: `cpu` (the demo), `satyam` (0.003 USD labels),
`select` (choose among cnn18, resnet20 and resnet56 as the paper does).

Sweeps (:func:`sweep`, same argument):

  python -m launch.sweep --config=configs/fashion_mnist.py --workdir=/tmp/sweeps/fmnist \
      --config.num_devices=1
  python -m launch.sweep --config=configs/fashion_mnist.py:cpu --workdir=/tmp/sweeps/fmnist_cpu

The first is the paper's ablation grid: 36 runs, each MCAL plus the AL(δ) baselines (see
:func:`paper_sweep`); on a machine with several GPUs `--config.num_devices=1` runs one
point per GPU. The second, 4 runs of the CPU demo (both services × 2 seeds), takes about
40 minutes on 2 cores; `configs/synthetic.py`'s sweep is the one that fits in a few minutes.
"""

from configs import common
from mcal_jax import sweep as sweep_lib


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


# The paper's ablation axes (Figs. 4-7 and 10-12, Table 2).
PAPER_SERVICES = ["amazon", "satyam"]
PAPER_EPSILONS = [0.05, 0.1]
PAPER_MODELS = [("cnn18",), ("resnet20",), ("resnet56",)]
PAPER_SEEDS = [0, 1, 2]


def paper_sweep() -> list[dict]:
    """Labeling service × ε × model × 3 seeds = 2 × 2 × 3 × 3 = 36 points.

    The δ grid of Figs. 5-7 is not an axis: MCAL adapts δ itself, and with
    ``baselines.run`` every point also runs AL(δ) for each δ in
    ``baselines.delta_fractions`` (1, 2, 5, 10, 20% of N) on the same T, seeds and cost
    model, so each point yields the whole cost-versus-δ curve next to MCAL's cost.
    """
    axes = {
        "baselines.run": [True],
        "labeling.service": PAPER_SERVICES,
        "mcal.epsilon": PAPER_EPSILONS,
        "models": PAPER_MODELS,
    }
    return sweep_lib.seeds(sweep_lib.product(axes), PAPER_SEEDS)


def sweep(arg: str = "") -> list[dict]:
    """The paper's grid (:func:`paper_sweep`); with `cpu`, both services × 2 seeds of the
    CPU demo. The points set the service and the models, so `satyam` and `select` change
    nothing here."""
    get_config(arg)  # rejects unknown arguments
    if "cpu" in arg.split(","):
        return sweep_lib.seeds(sweep_lib.product({"labeling.service": PAPER_SERVICES}), [0, 1])
    return paper_sweep()
