r"""Labels a whole dataset at minimum cost with MCAL.

  python -m launch.mcal --config=configs/fashion_mnist.py:cpu --workdir=/tmp/mcal/fmnist
  python -m launch.mcal --config=configs/cifar10.py --workdir=/tmp/mcal/c10 \
      --config.labeling.service=satyam --config.seed=1

Rerunning the same command resumes an interrupted run. With labels from people
(`--config.labeling.service=queue:QDIR`, see configs/folder.py), the run stops with exit
status 3 while their answers are awaited, saying how many in which file; rerun it once they
are in. See README.md for the outputs.
"""

from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from mcal_jax import labelers, parallel, run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.", required=True)
flags.mark_flags_as_required(["config"])
AWAITING_LABELS = 3  # the exit status while labels from people are awaited


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    parallel.maybe_initialize_distributed()
    try:
        summary = run.mcal(_CONFIG.value, _WORKDIR.value)
    except labelers.LabelsAwaited as awaited:
        logging.warning("%s", awaited)
        return AWAITING_LABELS
    logging.info("done: %s", summary.headline())
    return 0


if __name__ == "__main__":
    app.run(main)
