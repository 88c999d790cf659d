"""Defaults shared by every experiment: the paper's settings (docs/algorithm.md).

Experiment files import :func:`get_config` and change a few fields. Every field can be
overridden on the command line with ``--config.FIELD=VALUE``; the returned config is
locked, so a typo in a field name fails instead of being silently ignored.
"""

from collections.abc import Callable
from typing import Any

import ml_collections
from ml_collections import config_dict

from mcal_jax.costs import USD_PER_DEVICE_HOUR

# Paper Table 1: USD per image for one full 200-epoch training on 4 K80s at 3.6 USD/h,
# divided by 200 epochs. The paper's "RESNET18" was a CIFAR ResNet-20 and its "RESNET50"
# a ResNet-56 (docs/algorithm.md); the ImageNet-width ResNets get the rate of their class.
# `tiny` and `small` are priced by their training FLOPs relative to ResNet-20.
PAPER_USD_PER_IMAGE_EPOCH = {
    "cnn18": 0.00007 / 200,
    "resnet20": 0.0003 / 200,
    "resnet18": 0.0003 / 200,
    "resnet34": 0.0006 / 200,
    "resnet56": 0.0009 / 200,
    "resnet50": 0.0009 / 200,
    "small": 0.0003 / 200 * 0.2,
    "tiny": 0.0003 / 200 * 0.01,
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "fashion_mnist"  # or tfds:NAME, idx:DIR, npz:PATH, synthetic:...
    config.data.split = "all"  # X = train + test joined, as in the paper
    config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir
    config.data.max_items = 0  # > 0: use a random subset of this size (quick runs)
    config.data.image_shape = ""  # folder:DIR only: HxWxC every image becomes, e.g. 28x28x1
    # Class names, comma-separated ("cat,dog"); "": the data's own (class subfolders) or
    # numbers, and with people (a queue) the labels of their first answers.
    config.data.classes = ""
    # Where the pool's images live (mcal_jax.placement): "device" replicates them on every
    # device; "host" keeps them in host memory, or memory-mapped from npy:DIR, and streams
    # each batch to the devices (pools larger than a device); "auto" takes "device" when
    # the pool's bytes fit device_memory_gb, else "host". Both buy the same labels.
    config.data.placement = "auto"
    # GB (10^9 bytes) of one device's memory the pool may take; unset: half of what JAX
    # reports the device can allocate, or 2 GB where it reports nothing (CPUs).
    config.data.device_memory_gb = config_dict.placeholder(float)

    config.labeling = ml_collections.ConfigDict()
    # Simulated (the ground truth, sold at a price): amazon (0.04 USD), satyam (0.003 USD)
    # or a number. People: queue:QDIR, request files out and answers in (README, "Label
    # your own images"; "queue" alone is the workdir's queue/), or labelstudio:URL, the
    # tasks of a Label Studio project (README, "Label your own images with Label Studio";
    # the token in LABEL_STUDIO_API_KEY), at usd_per_label each.
    config.labeling.service = "amazon"
    config.labeling.usd_per_label = config_dict.placeholder(float)  # people only
    config.labeling.wait = False  # people: wait for answers instead of exiting with status 3
    config.labeling.poll_seconds = 10.0  # people, with wait: how often to look for answers
    config.labeling.project = ""  # Label Studio: the project's title ("": mcal <workdir>)
    # Label Studio: show the model's prediction on the tasks of B and of the residual (never
    # on test items). Off by default: a suggestion can anchor people, whose labels are
    # counted as right.
    config.labeling.suggestions = False
    config.labeling.error_rate = 0.0  # simulated human label noise

    config.mcal = ml_collections.ConfigDict()
    config.mcal.epsilon = 0.05
    config.mcal.constraint = "overall"  # or machine_subset (what the authors' code did)
    # T_plan, the test set the rounds read to fit, plan and stop (its labels also train
    # the final classifier): this fraction of N, and at least min_plan_test_items items.
    config.mcal.plan_test_fraction = 0.01
    config.mcal.min_plan_test_items = 200
    # T_cert, the test set that certifies, is drawn from the pool at the start and bought
    # at the end, in the size the last plan found cheapest (docs/algorithm.md, step 10).
    # "plan" certifies on T_plan instead: the labels the loop read, so the bound no longer
    # holds (the certificate benchmark's peeking variant); for comparisons only.
    config.mcal.certify_on = "reserve"
    config.mcal.delta0_fraction = 0.01  # δ0 / N
    # ... and at least this many items: learning curves move with label counts, not
    # fractions, so on a small pool 1% is too small a step to see them move.
    config.mcal.min_delta0_items = 200
    config.mcal.min_delta_fraction = 0.0025  # floor on δ / N
    config.mcal.stability_tolerance = 0.05  # Δ
    config.mcal.batch_slack = 0.05  # β
    config.mcal.min_rounds_for_stability = 3
    # Plans refitted to resampled test counts, to tell a real saving from noise (0: none).
    config.mcal.plan_replicates = 32
    config.mcal.metric = "margin"  # margin, entropy, least_confidence, random
    config.mcal.confidence = 0.95  # 1 − α of the certified bound
    config.mcal.max_rounds = 40
    # A cap on the loop, not on the run: the loop stops after the round whose spend reaches
    # it (that round's labels and training are paid in full). T_cert, the final classifier
    # (final_train) and the human labels of the residual are then bought anyway, so the
    # total exceeds it by their cost; summary.json's `budget` says whether it stopped the
    # loop and what was paid beyond it.
    config.mcal.budget_usd = config_dict.placeholder(float)
    config.mcal.selection_rounds = 3  # rounds all candidate models run side by side (at least)

    # Candidate architectures; with several, MCAL keeps the cheapest once all are stable.
    config.models = ("resnet20",)

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200
    config.train.min_steps = 0  # a round runs max(epochs × steps per epoch, min_steps) steps
    config.train.batch_size = 256
    # Run each device's rows of a step in slices of at most this many, gradients summed
    # (0: whole); each slice's BatchNorm statistics are its own (mcal_jax.microbatch).
    config.train.microbatch_size = 0
    config.train.optimizer = "adam"  # the paper's Keras recipe: Adam 1e-3, ÷10 steps
    config.train.learning_rate = 1e-3
    config.train.momentum = 0.9
    config.train.nesterov = True
    config.train.weight_decay = 1e-4
    config.train.schedule = "paper"
    config.train.decay_epochs = (80, 120, 160, 180)
    config.train.decay_factor = 0.1
    config.train.warmup_epochs = 0.0
    config.train.crop_padding = 4
    config.train.horizontal_flip = True
    config.train.compute_dtype = "float32"
    # Semi-supervised rounds (docs/algorithm.md, step 2): each step also fits
    # `unlabeled_ratio` × batch images outside B (U and T_plan alike, never their labels) to the
    # previous round's predictions, taking its most confident `pseudo_fraction` of them.
    config.train.semi_supervised = False
    config.train.unlabeled_ratio = 1
    config.train.pseudo_weight = 1.0
    config.train.pseudo_fraction = 0.5
    # Scoring with the average softmax of each image and its mirror (test-time flips), and
    # of the image moved this many pixels up, down, left and right (0: not moved), for the
    # items whose confidence over the image alone is below `test_time_views_below` (the
    # others keep that one pass's score; 1.0: every item gets every view).
    config.train.test_time_flip = False
    config.train.test_time_shift = 0
    config.train.test_time_views_below = 1.0
    # Final classifier only (set it in final_train): a semi-supervised final classifier
    # labels with the average of its teacher's and its own predictions.
    config.train.teacher_ensemble = False

    # The final classifier, trained once on the final B to do the machine labeling: the
    # fields set here override `train` (e.g. a longer schedule with augmentation, which the
    # cheap measuring rounds cannot afford). None everywhere: the last round's classifier.
    config.final_train = ml_collections.ConfigDict()
    config.final_train.epochs = config_dict.placeholder(int)
    config.final_train.min_steps = config_dict.placeholder(int)
    config.final_train.learning_rate = config_dict.placeholder(float)
    config.final_train.crop_padding = config_dict.placeholder(int)
    config.final_train.horizontal_flip = config_dict.placeholder(bool)
    config.final_train.semi_supervised = config_dict.placeholder(bool)
    config.final_train.pseudo_fraction = config_dict.placeholder(float)
    config.final_train.test_time_flip = config_dict.placeholder(bool)
    config.final_train.test_time_shift = config_dict.placeholder(int)
    config.final_train.test_time_views_below = config_dict.placeholder(float)
    config.final_train.teacher_ensemble = config_dict.placeholder(bool)

    config.score_batch_size = 1024
    config.num_devices = 0  # 0: all devices

    config.cost = ml_collections.ConfigDict()
    config.cost.mode = "measured"  # or per_image_epoch (the paper's Table 1 rates)
    config.cost.usd_per_device_hour = ml_collections.ConfigDict(USD_PER_DEVICE_HOUR)
    config.cost.usd_per_image_epoch = ml_collections.ConfigDict(PAPER_USD_PER_IMAGE_EPOCH)
    # per_image_epoch mode: scoring one item costs this fraction of one image-epoch of
    # training (a forward pass is about a third of a forward + backward).
    config.cost.scoring_fraction_of_image_epoch = 1 / 3

    config.baselines = ml_collections.ConfigDict()
    config.baselines.run = False
    config.baselines.delta_fractions = (0.01, 0.02, 0.05, 0.1, 0.2)
    config.baselines.max_rounds = 40

    # Locked: an experiment file or a command line that sets a field with a typo fails.
    return config.lock()


OPTIONS = ("cpu", "satyam", "select", "ablation")  # ablation: only the sweep differs
CANDIDATE_MODELS = ("cnn18", "resnet20", "resnet56")  # the paper's CNN18, RESNET18, RESNET50


def small_cpu_recipe(config: ml_collections.ConfigDict) -> None:
    """The training recipe of the CPU variants, on one device: the small ResNet, SGD with
    a cosine schedule (a short schedule needs a larger step than the paper's Adam), rounds
    of 8 epochs without augmentation, a final classifier with crops and flips. Each file
    then sets its own step counts."""
    config.models = ("small",)
    config.train.epochs = 8
    config.train.batch_size = 64
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.1
    config.train.weight_decay = 5e-4
    config.train.schedule = "cosine"
    config.train.crop_padding = 0
    config.train.horizontal_flip = False
    config.final_train.crop_padding = 2
    config.final_train.horizontal_flip = True
    config.num_devices = 1


def paper_experiment(
    name: str, dataset: str, arg: str, *, cpu: Callable[[ml_collections.ConfigDict], None]
) -> ml_collections.ConfigDict:
    """The paper's settings on ``dataset``, with the comma-separated ``arg`` options of the
    experiment files: `cpu` (shrink with the file's ``cpu(config)``), `satyam` (0.003 USD
    labels), `select` (choose among the paper's three architectures)."""
    options = set(filter(None, arg.split(",")))
    unknown = options - set(OPTIONS)
    if unknown:
        raise ValueError(f"configs/{name}.py: unknown arguments {sorted(unknown)}; use {OPTIONS}")
    config = get_config()
    config.data.dataset = dataset
    if "satyam" in options:
        config.labeling.service = "satyam"
    if "select" in options:
        config.models = CANDIDATE_MODELS
    if "cpu" in options:
        cpu(config)
    return config.lock()


# The paper's ablation axes (Figs. 4-7 and 10-12, Table 2).
PAPER_SERVICES = ["amazon", "satyam"]
PAPER_EPSILONS = [0.05, 0.1]
PAPER_MODELS = [(name,) for name in CANDIDATE_MODELS]
PAPER_SEEDS = [0, 1, 2]


def paper_sweep(arg: str = "") -> list[dict]:
    """Labeling service × ε × model × 3 seeds = 2 × 2 × 3 × 3 = 36 points; with `cpu` in
    ``arg``, the CPU variant over seeds 0, 1, 2 (its other options, e.g. `satyam`, apply).
    `ablation` is the Fashion-MNIST CPU demo's own (`configs.fashion_mnist.sweep`).

    The δ grid of Figs. 5-7 is not an axis: MCAL adapts δ itself, and with
    ``baselines.run`` every point also runs AL(δ) for each δ in
    ``baselines.delta_fractions`` (1, 2, 5, 10, 20% of N) on the same T, seeds and cost
    model, so each point yields the whole cost-versus-δ curve next to MCAL's cost.
    """
    from mcal_jax import sweep as sweep_lib

    options = arg.split(",")
    if "ablation" in options:
        raise ValueError("`ablation` is a sweep of configs/fashion_mnist.py:cpu only")
    if "cpu" in options:
        return sweep_lib.seeds([{}], PAPER_SEEDS)
    axes: dict[str, list[Any]] = {
        "baselines.run": [True],
        "labeling.service": PAPER_SERVICES,
        "mcal.epsilon": PAPER_EPSILONS,
        "models": PAPER_MODELS,
    }
    return sweep_lib.seeds(sweep_lib.product(axes), PAPER_SEEDS)
