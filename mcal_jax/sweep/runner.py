"""Running a sweep: the points of this shard one after the other in this process, or side
by side as subprocesses, one per group of local GPUs; and :func:`run_config_sweep`, all
that ``python -m launch.sweep`` does.

A point is finished when its folder holds ``summary.json`` (written last by a run), so a
rerun skips it; a point killed halfway is run again, and resumes (:func:`mcal_jax.run.mcal`
replays its ledger and state).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, logging

from mcal_jax import parallel
from mcal_jax.files import atomic_write_json
from mcal_jax.summary import read_summary
from mcal_jax.sweep.points import Point, apply_overrides, check_unique_names, parse_shard
from mcal_jax.sweep.points import shard as shard_points


def device_slots(
    num_local: int, devices_per_point: int, visible: str | None = None
) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` values, one per point that can run at a time, or None
    when only one point fits (then points run one after the other in this process).

    ``devices_per_point`` is ``config.num_devices`` (0: a point uses every device).
    ``visible`` is this process's own ``CUDA_VISIBLE_DEVICES``: slots name those ids.
    """
    ids = visible.split(",") if visible else [str(i) for i in range(num_local)]
    ids = ids[:num_local]
    if devices_per_point <= 0 or len(ids) // devices_per_point < 2:
        return None
    count = len(ids) // devices_per_point
    return [
        ",".join(ids[i * devices_per_point : (i + 1) * devices_per_point]) for i in range(count)
    ]


def local_accelerators() -> tuple[str, int]:
    """(platform, local device count), asked of a short-lived process so that this one
    does not take the GPUs' memory before its workers start."""
    probe = "import jax; print(jax.default_backend(), jax.local_device_count())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"cannot list the local devices:\n{out.stderr[-2000:]}")
    platform, count = out.stdout.split()[-2:]
    return platform, int(count)


def _status(name: str, overrides: Point, workdir: str, status: str, **extra: str) -> dict[str, Any]:
    """A point's status, with its `Summary` (None while it has none). A summary.json that is
    no summary (another version's, or damaged) makes the point failed, saying why."""
    try:
        summary = read_summary(os.path.join(workdir, "summary.json"))
    except ValueError as error:
        summary, status, extra = None, "failed", extra | {"error": str(error)}
    return (
        dict(name=name, overrides=overrides, workdir=workdir, status=status, summary=summary)
        | extra
    )


def run_sweep(
    config: ml_collections.ConfigDict,
    points: Sequence[Point],
    workdir: str,
    *,
    shard: tuple[int, int] = (0, 1),
    runner: Callable[[ml_collections.ConfigDict, str], object] | None = None,
    devices: Sequence[str] | None = None,
    point_command: Callable[[str], list[str]] | None = None,
) -> list[dict]:
    """Runs this shard's points of the sweep; returns one status dict per point: its
    ``name``, ``overrides``, ``workdir``, ``status`` (finished, skipped or failed, with
    ``error``) and ``summary`` (its `mcal_jax.summary.Summary`, None without one).

    Every point gets ``workdir/<point_name>``; ``workdir/sweep.json`` lists all points of
    the sweep (every shard writes the same bytes). A point whose folder holds
    ``summary.json`` is skipped; the others run through ``runner(config, point_workdir)``
    (default :func:`mcal_jax.run.mcal`, which resumes a half-finished point). A point that
    fails is reported (``status="failed"``) and the sweep goes on with the next.

    With ``devices`` (from :func:`device_slots`, two or more) and ``point_command`` (the
    argv that runs one named point), points run as subprocesses, one per device slot at a
    time, each seeing only its slot through ``CUDA_VISIBLE_DEVICES`` and logging to
    ``<point>/log.txt``. Otherwise they run here one after the other.
    """
    if runner is None:
        from mcal_jax import run  # imported late: the subprocess path never needs it

        runner = run.mcal
    names = check_unique_names(points)
    named = list(zip(names, points, strict=True))
    configs = {name: apply_overrides(config, p) for name, p in named}  # a typo fails here
    os.makedirs(workdir, exist_ok=True)
    listing = [{"name": name, "overrides": p} for name, p in named]
    on_devices = bool(devices and len(devices) > 1 and point_command is not None)
    # In a multi-host job only process 0 writes. The device scheduler never joins one, and
    # must not start JAX here: that would take the GPUs' memory before its workers start.
    if on_devices or parallel.is_main_process():
        atomic_write_json(os.path.join(workdir, "sweep.json"), {"points": listing})

    mine = shard_points(named, *shard)
    logging.info("sweep: %d points, shard %d/%d runs %d", len(points), *shard, len(mine))
    results, todo = {}, []
    for name, point in mine:
        point_dir = os.path.join(workdir, name)
        if os.path.exists(os.path.join(point_dir, "summary.json")):
            logging.info("sweep point %s: skipped (finished)", name)
            results[name] = _status(name, point, point_dir, "skipped")
        else:
            todo.append((name, point, point_dir))

    if on_devices and devices and point_command:
        results.update(_run_on_devices(todo, devices, point_command))
    else:
        for name, point, point_dir in todo:
            resuming = os.path.isdir(point_dir)
            logging.info("sweep point %s: %s", name, "resuming" if resuming else "starting")
            try:
                runner(configs[name], point_dir)
            except Exception:  # noqa: BLE001 - one failed point must not stop the sweep
                logging.error("sweep point %s failed:\n%s", name, traceback.format_exc())
                error = traceback.format_exc(limit=3)
                results[name] = _status(name, point, point_dir, "failed", error=error)
                continue
            results[name] = _status(name, point, point_dir, "finished")
    return [results[name] for name, _ in mine]


def _run_on_devices(
    todo: Sequence[tuple[str, Point, str]],
    devices: Sequence[str],
    point_command: Callable[[str], list[str]],
) -> dict[str, dict[str, Any]]:
    """A small scheduler: start the next point on every free device slot, wait for one to
    end, repeat. The points are independent processes, so a crash frees only its slot."""
    queue, results = list(todo), {}
    running: dict[str, tuple] = {}  # slot -> (process, name, point, point_dir, log)
    try:
        while queue or running:
            for slot in devices:
                if slot in running or not queue:
                    continue
                name, point, point_dir = queue.pop(0)
                os.makedirs(point_dir, exist_ok=True)
                log = open(os.path.join(point_dir, "log.txt"), "a")  # noqa: SIM115
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=slot)
                process = subprocess.Popen(
                    point_command(name), env=env, stdout=log, stderr=subprocess.STDOUT
                )
                logging.info("sweep point %s: started on device %s", name, slot)
                running[slot] = (process, name, point, point_dir, log)
            time.sleep(0.2)
            for slot, (process, name, point, point_dir, log) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[slot]
                if process.returncode == 0 and os.path.exists(
                    os.path.join(point_dir, "summary.json")
                ):
                    logging.info("sweep point %s: finished", name)
                    results[name] = _status(name, point, point_dir, "finished", device=slot)
                else:
                    error = f"exit code {process.returncode}; see {point_dir}/log.txt"
                    logging.error("sweep point %s failed: %s", name, error)
                    results[name] = _status(
                        name, point, point_dir, "failed", device=slot, error=error
                    )
    finally:  # interrupted: stop the points still running; a rerun resumes them
        for process, *_, log in running.values():
            process.terminate()
            process.wait()
            log.close()
    return results


def load_points(config_flag: str) -> list[Point]:
    """Calls ``sweep(arg)`` of the config file named by ``--config=FILE[:ARG]``."""
    path, _, arg = config_flag.partition(":")
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise app.UsageError(f"--config={config_flag}: no Python file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "sweep"):
        raise app.UsageError(f"{path} defines no sweep(arg) function")
    return module.sweep(arg)


def point_argv(argv: Sequence[str], name: str) -> list[str]:
    """The command that runs one point: ``argv`` (this sweep's command line) without
    --shard/--dry_run, plus --point."""
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


def dry_run_lines(points: Sequence[Point], workdir: str, shard: tuple[int, int]) -> list[str]:
    """What a dry run prints: a header, then this shard's points, each with its state
    (``finished``, ``partial`` or ``new``), name and overrides. Writes nothing."""
    mine = shard_points(list(zip(check_unique_names(points), points, strict=True)), *shard)
    lines = [f"{len(points)} points, shard {shard[0]}/{shard[1]} holds {len(mine)}:"]
    for name, point in mine:
        point_dir = os.path.join(workdir, name)
        done = os.path.exists(os.path.join(point_dir, "summary.json"))
        state = "finished" if done else "partial" if os.path.isdir(point_dir) else "new"
        lines.append(f"  [{state}] {name}  {json.dumps(point)}")
    return lines


def run_config_sweep(
    config: ml_collections.ConfigDict,
    config_flag: str,
    workdir: str,
    *,
    shard: str | None = None,
    dry_run: bool = False,
    point: str | None = None,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[dict] | None:
    """The sweep of a config file (``python -m launch.sweep``); its results, None when
    nothing ran as a sweep (``dry_run`` or ``point``).

    ``config`` is the base config (with any ``--config.x=v``), ``config_flag`` the
    ``--config`` value ``FILE[:ARG]`` whose ``sweep(ARG)`` gives the points, ``shard`` the
    ``--shard`` value (else a SLURM job array's task, else all points). ``dry_run`` prints
    this shard's points. ``point`` runs only that named point, here: the command of one
    worker of the device scheduler, which ``argv`` (default ``sys.argv``) gives. Raises
    SystemExit naming the failed points when any failed.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    points = load_points(config_flag)
    names = check_unique_names(points)

    if point is not None:  # one point, in this process (a worker of the scheduler)
        if point not in names:
            raise app.UsageError(f"--point={point}: not a point of this sweep")
        from mcal_jax import run  # imported late: a sweep that only schedules never needs it

        run.mcal(apply_overrides(config, points[names.index(point)]), os.path.join(workdir, point))
        return None

    index_count = parse_shard(shard, environ)
    if dry_run:
        print("\n".join(dry_run_lines(points, workdir, index_count)))
        return None

    devices = None
    if config.num_devices >= 1:
        platform, count = local_accelerators()
        if platform == "gpu":
            devices = device_slots(count, config.num_devices, environ.get("CUDA_VISIBLE_DEVICES"))
    results = run_sweep(
        config,
        points,
        workdir,
        shard=index_count,
        devices=devices,
        point_command=lambda name: point_argv(argv, name),
    )
    for r in results:
        cost = "-" if r["summary"] is None else f"{r['summary'].cost_usd.total:.2f} USD"
        logging.info("%-8s %s: %s", r["status"], r["name"], cost)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} points failed: {failed}")
    return results
