r"""Plots and tables of a finished MCAL run, or of a sweep of runs.

  python -m launch.report --workdir=/tmp/mcal/fmnist    # writes /tmp/mcal/fmnist/report/
  python -m launch.report --sweep=/tmp/mcal/sweep       # one run workdir per subfolder

See ``mcal_jax.report`` for what is drawn.
"""

from collections.abc import Sequence

from absl import app, flags, logging

from mcal_jax import report, sweep_report

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a finished run.")
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep directory: one run workdir per subfolder.")
flags.mark_flags_as_mutual_exclusive(["workdir", "sweep"], required=True)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIR.value:
        paths = report.write_report(_WORKDIR.value)
    elif _SWEEP.value:
        paths = sweep_report.sweep_report(_SWEEP.value)
    else:  # given but empty: the flags' validator refuses neither given nor both
        raise app.UsageError("--workdir or --sweep is empty: name a directory")
    logging.info("wrote %s", ", ".join(paths))


if __name__ == "__main__":
    app.run(main)
