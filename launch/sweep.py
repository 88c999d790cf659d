r"""Runs the sweep of a config file: every point is a full MCAL run in its own folder.

  python -m launch.sweep --config=configs/synthetic.py --workdir=/tmp/sweep_syn
  python -m launch.sweep --config=configs/cifar10.py --workdir=/tmp/sweeps/c10 --shard=0/4
  python -m launch.sweep --config=configs/fashion_mnist.py --workdir=/tmp/s --dry_run

The points come from the file's ``sweep(arg)``, called with the argument after the colon
(the same one ``get_config(arg)`` gets); ``--config.x=v`` overrides the base config of
every point. ``--shard=i/n`` (or a SLURM job array, ``sbatch --array=0-3``) runs a
disjoint part of the points. Rerunning skips finished points and resumes a point that was
killed halfway. With several local GPUs and ``config.num_devices`` >= 1, points run side
by side, each on its own ``num_devices`` GPUs (``--config.num_devices=1``: one per GPU).
See :mod:`mcal_jax.sweep`.
"""

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from mcal_jax import sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for the sweep; one folder a point.", required=True
)
_SHARD = flags.DEFINE_string("shard", None, "INDEX/COUNT: run this part of the points.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print this shard's points and exit.")
_POINT = flags.DEFINE_string("point", None, "Run only the point of this name, here.")
flags.mark_flags_as_required(["config"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sweep.run_config_sweep(
        _CONFIG.value,
        config_flags.get_config_filename(flags.FLAGS["config"]),
        _WORKDIR.value,
        shard=_SHARD.value,
        dry_run=_DRY_RUN.value,
        point=_POINT.value,
    )


if __name__ == "__main__":
    app.run(main)
