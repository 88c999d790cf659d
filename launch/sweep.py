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

import importlib.util
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mcal_jax import run, sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the sweep; one folder a point.")
_SHARD = flags.DEFINE_string("shard", None, "INDEX/COUNT: run this part of the points.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print this shard's points and exit.")
_POINT = flags.DEFINE_string("point", None, "Run only the point of this name, here.")
flags.mark_flags_as_required(["config", "workdir"])


def load_points(config_flag_value: str) -> list[dict]:
    """Calls ``sweep(arg)`` of the config file named by ``--config=FILE[:ARG]``."""
    path, _, arg = config_flag_value.partition(":")
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    if spec is None or not os.path.isfile(path):
        raise app.UsageError(f"--config={config_flag_value}: no Python file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "sweep"):
        raise app.UsageError(f"{path} defines no sweep(arg) function")
    return module.sweep(arg)


def point_argv(argv: list[str], name: str) -> list[str]:
    """The command that runs one point: this one without --shard/--dry_run, plus --point."""
    kept, skip_next = [], False
    for token in argv[1:]:
        if skip_next:
            skip_next = False
            continue
        flag = token.split("=", 1)[0]
        if flag in ("--shard", "--point"):
            skip_next = "=" not in token
            continue
        if flag in ("--dry_run", "--nodry_run"):
            continue
        kept.append(token)
    return [sys.executable, "-m", "launch.sweep", *kept, f"--point={name}"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    points = load_points(flags.FLAGS["config"].config_filename)
    names = sweep.check_unique_names(points)

    if _POINT.value is not None:  # one point, in this process (a worker of the scheduler)
        if _POINT.value not in names:
            raise app.UsageError(f"--point={_POINT.value}: not a point of this sweep")
        point = points[names.index(_POINT.value)]
        run.mcal(sweep.apply_overrides(config, point), os.path.join(workdir, _POINT.value))
        return

    shard = sweep.parse_shard(_SHARD.value, os.environ)
    if _DRY_RUN.value:
        mine = sweep.shard(list(zip(names, points, strict=True)), *shard)
        print(f"{len(points)} points, shard {shard[0]}/{shard[1]} holds {len(mine)}:")
        for name, point in mine:
            point_dir = os.path.join(workdir, name)
            done = os.path.exists(os.path.join(point_dir, "summary.json"))
            state = "finished" if done else "partial" if os.path.isdir(point_dir) else "new"
            print(f"  [{state}] {name}  {json.dumps(point)}")
        return

    devices = None
    if config.num_devices >= 1:
        platform, count = sweep.local_accelerators()
        if platform == "gpu":
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            devices = sweep.device_slots(count, config.num_devices, visible)
    results = sweep.run_sweep(
        config,
        points,
        workdir,
        shard=shard,
        devices=devices,
        point_command=lambda name: point_argv(sys.argv, name),
    )
    for r in results:
        cost = (r["summary"] or {}).get("cost_usd", {})
        total = cost.get("total")
        logging.info(
            "%-8s %s: %s", r["status"], r["name"], "-" if total is None else f"{total:.2f} USD"
        )
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} points failed: {failed}")


if __name__ == "__main__":
    app.run(main)
