"""Sweeps: many MCAL runs of one config file, each in its own folder of the sweep's workdir.

A config file's ``sweep(arg)`` returns the points, each a dict of overrides with dotted
keys (``{"labeling.service": "satyam", "mcal.epsilon": 0.1, "seed": 2}``), built with
:func:`product`, :func:`zip_`, :func:`times` and :func:`seeds`. :func:`run_sweep` runs
them in ``workdir/<point_name>/``, each with the full outputs of a run (README.md).

Why it is safe to rerun and to split:
- A point is finished when its folder holds ``summary.json`` (written last by a run), so
  a rerun skips it. A point killed halfway has a folder without it; running it again
  resumes it (:func:`mcal_jax.run.mcal` replays its ledger and state).
- :func:`shard` deals the points round-robin (``points[index::count]``): the shards of one
  sweep are disjoint and together hold every point, so ``--shard=i/n`` or a SLURM job
  array can split a sweep over machines without coordination.
- Point names depend only on the point's own overrides, never on its position, so a
  sweep that grows (another seed) keeps its finished folders.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence

import ml_collections
from absl import logging

from mcal_jax.outputs import atomic_write_json, read_json

Point = dict  # dotted field name -> value
MAX_NAME_CHARS = 150  # well under the 255 bytes most filesystems allow for a name


def product(axes: Mapping[str, Sequence] | None = None, /, **more: Sequence) -> list[Point]:
    """Every combination of the axes' values (the first axis varies slowest).

    ``product({"labeling.service": ["amazon", "satyam"], "mcal.epsilon": [0.05, 0.1]})``
    gives 4 points. Dotted names need the mapping form; plain names can be keywords.
    """
    axes = {**(axes or {}), **more}
    for key, values in axes.items():
        _check_axis(key, values)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def zip_(axes: Mapping[str, Sequence] | None = None, /, **more: Sequence) -> list[Point]:
    """Axes that move together: point i takes value i of every axis (equal lengths)."""
    axes = {**(axes or {}), **more}
    for key, values in axes.items():
        _check_axis(key, values)
    lengths = {key: len(values) for key, values in axes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zip_: the axes have different lengths {lengths}")
    return [dict(zip(axes, combo, strict=True)) for combo in zip(*axes.values(), strict=True)]


def times(a: Sequence[Point], b: Sequence[Point]) -> list[Point]:
    """Every point of ``a`` combined with every point of ``b`` (they must not share a key)."""
    points = []
    for x in a:
        for y in b:
            shared = set(x) & set(y)
            if shared:
                raise ValueError(f"times: both sides set {sorted(shared)}")
            points.append({**x, **y})
    return points


def seeds(points: Sequence[Point], seed_values: Sequence[int]) -> list[Point]:
    """Each point once per seed (``config.seed``); seeds vary fastest."""
    return times(points, [{"seed": int(s)} for s in seed_values])


def _check_axis(key: str, values) -> None:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"sweep axis {key!r}: expected a non-empty list of values, got {values!r}")


def _format_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_format_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def point_name(overrides: Point) -> str:
    """The point's folder name: ``key=value`` pairs in key order, joined by commas.

    Deterministic and filesystem-safe. When a value had to be changed to be safe (or holds
    ``,``, ``=`` or ``+``, which would make two points read alike) or the name is long, a
    hash of the exact overrides is appended, so different points keep different names.
    """
    if not overrides:
        return "base"
    parts, lossy = [], False
    for key in sorted(overrides):
        text = _format_value(overrides[key])
        safe = re.sub(r"[^A-Za-z0-9._+-]", "_", text)
        lossy |= safe != text or any(c in str(v) for v in _leaves(overrides[key]) for c in "+,=")
        parts.append(f"{key}={safe}")
    name = ",".join(parts)
    if lossy or len(name) > MAX_NAME_CHARS:
        exact = json.dumps(sorted(overrides.items()), default=repr)
        digest = hashlib.sha256(exact.encode()).hexdigest()[:10]
        name = f"{name[:MAX_NAME_CHARS]}-{digest}"
    return name


def _leaves(value):
    return value if isinstance(value, (tuple, list)) else (value,)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Point
) -> ml_collections.ConfigDict:
    """A locked copy of ``config`` with the point's dotted fields set; ``config`` is untouched.

    Only existing fields can be set (as with ``--config.x=v``): a typo raises an error that
    names the key and the fields that do exist. Lists set tuple fields.
    """
    new = config.copy_and_resolve_references()
    with new.unlocked():
        for key, value in overrides.items():
            parts = key.split(".")
            node = new
            for depth, part in enumerate(parts):
                if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                    where = ".".join(parts[:depth]) or "the config"
                    known = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
                    raise KeyError(
                        f"sweep override {key!r}: {where} has no field {part!r}"
                        + (f"; its fields are {known}" if known else "")
                    )
                if depth < len(parts) - 1:
                    node = node[part]
            field = parts[-1]
            if isinstance(node[field], tuple) and isinstance(value, list):
                value = tuple(value)
            try:
                node[field] = value
            except TypeError as error:
                raise TypeError(
                    f"sweep override {key}={value!r}: wrong type for the field "
                    f"(now {node[field]!r}): {error}"
                ) from None
    return new.lock()


def shard(points: Sequence, index: int, count: int) -> list:
    """Shard ``index`` of ``count``: ``points[index::count]`` (disjoint, together complete)."""
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need integers with 0 <= index < count")
    return list(points[index::count])


_shard_points = shard  # run_sweep's `shard` argument hides the function


def parse_shard(flag_value: str | None, environ: Mapping[str, str]) -> tuple[int, int]:
    """(index, count) from ``--shard=i/n``, else from a SLURM job array, else (0, 1).

    Under ``sbatch --array=A-B[:S]`` the task's index is (SLURM_ARRAY_TASK_ID −
    SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP and the count SLURM_ARRAY_TASK_COUNT,
    so ``--array=1-8`` and ``--array=0-7`` split the same way.
    """
    if flag_value:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", flag_value)
        if not match:
            raise ValueError(f"--shard={flag_value!r}: expected INDEX/COUNT, e.g. --shard=0/4")
        index, count = int(match[1]), int(match[2])
        if not 0 <= index < count:
            raise ValueError(f"--shard={flag_value}: need 0 <= INDEX < COUNT")
        return index, count
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return 0, 1
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
    missing = [n for n in names if n not in environ]
    if missing:
        raise ValueError(f"SLURM_ARRAY_TASK_ID is set but {missing} is not; pass --shard=i/n")
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1"))
    except ValueError:
        values = {n: environ.get(n) for n in (*names, "SLURM_ARRAY_TASK_MIN")}
        raise ValueError(f"SLURM array variables are not integers: {values}") from None
    index, rest = divmod(task - first, max(step, 1))
    if rest or not 0 <= index < count:
        raise ValueError(
            f"SLURM array task {task} (min {first}, step {step}, count {count}) is not one "
            "of a regular array --array=A-B[:S]; pass --shard=i/n instead"
        )
    return index, count


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


def check_unique_names(points: Sequence[Point]) -> list[str]:
    """The points' names, after checking that no two points share one."""
    names = [point_name(p) for p in points]
    seen: dict[str, Point] = {}
    for name, point in zip(names, points, strict=True):
        if name in seen:
            raise ValueError(
                f"two sweep points share the folder {name!r}: {seen[name]} and {point}"
            )
        seen[name] = point
    return names


def _status(name: str, overrides: Point, workdir: str, status: str, **extra) -> dict:
    summary = read_json(os.path.join(workdir, "summary.json"))
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
    runner: Callable[[ml_collections.ConfigDict, str], dict] | None = None,
    devices: Sequence[str] | None = None,
    point_command: Callable[[str], list[str]] | None = None,
) -> list[dict]:
    """Runs this shard's points of the sweep; returns one status dict per point.

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
    atomic_write_json(os.path.join(workdir, "sweep.json"), {"points": listing})

    mine = _shard_points(named, *shard)
    logging.info("sweep: %d points, shard %d/%d runs %d", len(points), *shard, len(mine))
    results, todo = {}, []
    for name, point in mine:
        point_dir = os.path.join(workdir, name)
        if os.path.exists(os.path.join(point_dir, "summary.json")):
            logging.info("sweep point %s: skipped (finished)", name)
            results[name] = _status(name, point, point_dir, "skipped")
        else:
            todo.append((name, point, point_dir))

    if devices and len(devices) > 1 and point_command is not None:
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


def _run_on_devices(todo, devices: Sequence[str], point_command) -> dict:
    """A small scheduler: start the next point on every free device slot, wait for one to
    end, repeat. The points are independent processes, so a crash frees only its slot."""
    queue, running, results = list(todo), {}, {}  # running: slot -> (process, name, ...)
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
