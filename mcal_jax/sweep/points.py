"""The points of a sweep: building them, naming their folders, applying them to a config,
and dealing them into shards.

A point is a dict of overrides with dotted keys (``{"labeling.service": "satyam",
"mcal.epsilon": 0.1, "seed": 2}``), built with :func:`product`, :func:`zip_`, :func:`times`
and :func:`seeds`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import ml_collections

Point = dict[str, Any]  # dotted field name -> value
_T = TypeVar("_T")
MAX_NAME_CHARS = 150  # well under the 255 bytes most filesystems allow for a name


def product(
    axes: Mapping[str, Sequence[Any]] | None = None, /, **more: Sequence[Any]
) -> list[Point]:
    """Every combination of the axes' values (the first axis varies slowest).

    ``product({"labeling.service": ["amazon", "satyam"], "mcal.epsilon": [0.05, 0.1]})``
    gives 4 points. Dotted names need the mapping form; plain names can be keywords.
    """
    axes = {**(axes or {}), **more}
    for key, values in axes.items():
        _check_axis(key, values)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def zip_(axes: Mapping[str, Sequence[Any]] | None = None, /, **more: Sequence[Any]) -> list[Point]:
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


def _check_axis(key: str, values: object) -> None:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"sweep axis {key!r}: expected a non-empty list of values, got {values!r}")


def _format_value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_format_value(v) for v in value) if value else "none"
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


def _leaves(value: object) -> Sequence[object]:
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


def shard(points: Sequence[_T], index: int, count: int) -> list[_T]:
    """Shard ``index`` of ``count``: ``points[index::count]`` (disjoint, together complete)."""
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need integers with 0 <= index < count")
    return list(points[index::count])


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
