"""Durable files: after a crash, each file holds either its old content or its new one.

Every file a run writes (apart from the ledger, which appends its own records) goes
through here. Whole files are written to a temporary file in the same directory, fsync-ed,
renamed over the old one, and the directory is fsync-ed so that the rename itself survives
a power loss. JSON-lines files are appended one line per ``write`` and fsync-ed; a crash
can leave only the last line incomplete, and readers drop such a line.

Writers return whether they changed the file: content equal to what is on disk is not
written again, so rerunning a finished run changes no file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np


def fsync_directory(path: str | os.PathLike) -> None:
    """Makes the entries of directory ``path`` (a new or renamed file) durable."""
    if not hasattr(os, "O_DIRECTORY"):  # not POSIX: nothing to do
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dumps(value: Any) -> str:
    # Infinity is allowed: a threshold that machine-labels nothing is +inf.
    return json.dumps(value, indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> bool:
    """Replaces the file at ``path`` by ``data`` atomically; False when it already held them."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=directory, delete=False, suffix=".tmp") as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    fsync_directory(directory)
    return True


def atomic_write_json(path: str | os.PathLike, value: Any) -> bool:
    """Writes ``value`` as JSON atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, (_dumps(value) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """The parsed file, or None when it does not exist; ValueError naming it when unreadable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def append_json_line(path: str | os.PathLike, value: Any) -> None:
    """Appends ``value`` as one JSON line with a single write, durable on return."""
    path = os.fspath(path)
    line = (json.dumps(value, default=_json_default) + "\n").encode("utf-8")
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(line)
        while view:  # one write in practice; loop only in case the OS writes short
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(os.path.dirname(os.path.abspath(path)))


def read_json_lines(path: str | os.PathLike, *, repair: bool = False) -> list[Any]:
    """The records of a JSON-lines file ([] when it does not exist).

    A last line without its newline that does not parse is the trace of a crash during
    :func:`append_json_line`: it is dropped, and with ``repair`` cut from the file so that
    the next append starts a clean line. Any other unreadable line raises ValueError
    naming the file and the line.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # the bytes after the last newline: empty unless a write was torn
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}, line {number}: not a JSON record ({error})") from None
    if not tail:
        return records
    try:
        records.append(json.loads(tail.decode("utf-8")))
        complete = b"\n"  # whole but for its newline
    except (UnicodeDecodeError, json.JSONDecodeError):
        complete = None  # torn by a crash during its append
    if repair:
        if complete is None:
            os.truncate(path, len(data) - len(tail))
            fd = os.open(path, os.O_WRONLY)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, complete)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return records


def atomic_write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> bool:
    """Saves ``arrays`` as an .npz atomically; False when the file already holds equal ones."""
    path = os.fspath(path)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as saved:
                if set(saved.files) == set(arrays) and all(
                    np.array_equal(saved[k], np.asarray(v)) for k, v in arrays.items()
                ):
                    return False
        except (OSError, ValueError):
            pass  # unreadable: overwrite it
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=directory, delete=False, suffix=".tmp") as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    fsync_directory(directory)
    return True


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz, or None when it is missing or unreadable."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as saved:
            return {k: saved[k] for k in saved.files}
    except (OSError, ValueError, EOFError):
        return None
