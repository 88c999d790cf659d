r"""MCAL on your own images: a folder of PNG/JPEG files, labeled by people through a queue.

  python -m launch.mcal --config=configs/folder.py --workdir=/tmp/mcal/mine \
      --config.data.dataset=folder:/path/to/images --config.data.image_shape=32x32x3 \
      --config.labeling.service=queue:/path/to/queue --config.labeling.usd_per_label=0.04

CPU (`:cpu`: a small ResNet, short rounds, images of 28x28x1 unless set; the README's
"Label your own images" runs it on 3,000 Fashion-MNIST images):

  python -m launch.mcal --config=configs/folder.py:cpu --workdir=workdirs/own \
      --config.data.dataset=folder:workdirs/fashion_folder/images \
      --config.labeling.service=queue:workdirs/own/queue --config.labeling.usd_per_label=0.04

Every purchase writes `QDIR/requests/<name>.csv` (index,path) and a Label Studio import
file; the run exits with status 3 until `QDIR/answers/<name>.csv` (index,label) or a Label
Studio export `QDIR/answers/<name>.json` is there, and the same command then goes on
(`--config.labeling.wait=True` waits instead). Class names: `--config.data.classes=a,b,c`,
else the labels of the first answers. Outputs: `labels.csv` (path,label,source,confidence).

With class subfolders (DIR/cat/..., DIR/dog/...), the subfolders are ground truth: a
simulated service (`--config.labeling.service=amazon`) then labels from them, and a queue
run reports the true error against them.
"""

from configs import common

OPTIONS = ("cpu",)


def get_config(arg: str = "") -> "common.ml_collections.ConfigDict":
    options = set(filter(None, arg.split(",")))
    if options - set(OPTIONS):
        raise ValueError(f"configs/folder.py: unknown arguments {sorted(options)}; use {OPTIONS}")
    config = common.get_config()
    config.data.dataset = "folder:"  # set it: --config.data.dataset=folder:DIR
    config.data.image_shape = "32x32x3"
    config.labeling.service = "queue"  # the workdir's queue/, or queue:QDIR
    config.mcal.delta0_fraction = 0.02
    config.mcal.max_rounds = 10
    if "cpu" in options:
        cpu(config)
    return config.lock()


def cpu(config: "common.ml_collections.ConfigDict") -> None:
    """For 2 CPU cores, the Fashion-MNIST demo's recipe (configs/fashion_mnist.py) with
    shorter rounds and final training: a small ResNet, SGD with a cosine schedule, rounds
    of at least 400 steps, a final classifier of 1,600 steps with crops and flips."""
    config.data.image_shape = "28x28x1"
    common.small_cpu_recipe(config)
    config.train.min_steps = 400
    config.final_train.min_steps = 1600
