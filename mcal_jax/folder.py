"""Image folders as pools: every PNG and JPEG under a folder, converted to one shape.

``load_folder(DIR, "28x28x1")`` reads every ``.png``, ``.jpg`` and ``.jpeg`` file (any case)
under DIR, at any depth, symbolic links to folders and files included, and sorts them by
their path relative to DIR: the index of an item is its position in that order, and
``Dataset.paths`` keeps the relative paths (with ``/`` separators). Other files, and hidden
files and folders (names starting with a dot), are ignored. A file name that is not UTF-8,
an image too large for Pillow to open safely, and a folder reached twice through a link
are refused, naming the file or folder.

Each image is converted to the configured channel count (1: grayscale, 3: RGB; alpha is
dropped) and, when its size differs, resized to the configured height and width. Resizing
never distorts: an image whose aspect ratio differs from the configured one is refused,
naming the file (crop or pad such images first).

Ground truth: when no image lies directly in DIR and each lies in a subfolder, the
top-level subfolders are the classes (sorted by name) and an image's subfolder is its
label; a subfolder without images is then refused, not dropped from the classes. The run
uses such labels only to simulate labelers and to report the true error; a flat folder has
no ground truth (``Dataset.labels`` is None): people label it.
"""

from __future__ import annotations

import os

import numpy as np

from mcal_jax.dataset import DataError, Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = {1: "L", 3: "RGB"}  # channel count -> Pillow mode


def parse_shape(text: str, where: str = "data.image_shape") -> tuple[int, int, int]:
    """``"28x28x1"`` as (28, 28, 1); DataError naming ``where`` unless it is HxWxC with
    H, W ≥ 1 and C in (1, 3)."""
    parts = str(text).lower().split("x")
    try:
        height, width, channels = (int(p) for p in parts)
    except ValueError:
        raise DataError(f"{where}={text!r}: expected HxWxC, e.g. 28x28x1 or 32x32x3") from None
    if height < 1 or width < 1 or channels not in CHANNELS:
        raise DataError(f"{where}={text!r}: height and width must be ≥ 1 and channels 1 or 3")
    return height, width, channels


def image_files(directory: str) -> list[str]:
    """The relative paths (``/``-separated) of the images under ``directory``, sorted;
    symbolic links to folders and files are followed. DataError naming the file or folder
    for a file name that is not UTF-8 (paths go into requests, ``labels.csv`` and JSON), a
    folder that cannot be read, or a folder reached twice through a link."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: image folder not found")

    def unreadable(error: OSError) -> None:
        raise DataError(f"{_shown(error.filename)}: cannot read this folder ({error.strerror})")

    found = []
    read: dict[str, str] = {}  # each folder read, by its real path
    for base, folders, names in os.walk(directory, onerror=unreadable, followlinks=True):
        real = os.path.realpath(base)
        if real in read:
            raise DataError(
                f"{_shown(base)}: the folder {_shown(read[real])} again, through a symbolic "
                "link; its images would be read twice: remove the link"
            )
        read[real] = base
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in names:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                relative = os.path.relpath(os.path.join(base, name), directory)
                if not _is_utf8(relative):
                    raise DataError(
                        f"{_shown(os.path.join(base, name))}: the file name is not valid UTF-8 "
                        "(requests, labels.csv and the workdir's JSON files hold each path); "
                        "rename it"
                    )
                found.append(relative.replace(os.sep, "/"))
    if not found:
        raise DataError(
            f"{directory}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, "
            "any case, in the folder and its subfolders)"
        )
    return sorted(found)


def _is_utf8(path: str) -> bool:
    """Whether ``path`` (as the file system gave it) is valid UTF-8 text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return True


def _shown(path: str) -> str:
    """``path`` printable, its undecodable bytes written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def subfolders(directory: str) -> list[str]:
    """The names of the folders (or links to folders) directly in ``directory``, hidden
    ones left out, sorted."""
    with os.scandir(directory) as entries:
        names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    return sorted(names)


def class_folders(paths: list[str]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(class names, labels) when every path lies in a top-level subfolder, else ((), None)."""
    if any("/" not in p for p in paths):
        return (), None
    tops = [p.split("/", 1)[0] for p in paths]
    names = tuple(sorted(set(tops)))
    number = {name: k for k, name in enumerate(names)}
    return names, np.array([number[top] for top in tops], np.int32)


def read_image(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as uint8 [H, W, C] of ``shape``; DataError naming the file."""
    from PIL import Image, UnidentifiedImageError  # Only image folders need Pillow.

    height, width, channels = shape
    try:
        with Image.open(path) as opened:
            opened.load()
            image: Image.Image = opened
            if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte
                image = Image.fromarray((np.asarray(image, np.uint16) >> 8).astype(np.uint8))
            elif image.mode in ("I", "F"):
                raise DataError(f"{path}: {image.mode!r} images (32-bit) are not supported")
            image = image.convert(CHANNELS[channels])
            if image.size != (width, height):
                w, h = image.size
                # The same aspect ratio, to within the rounding of one pixel.
                if abs(w * height - h * width) > max(height, width):
                    raise DataError(
                        f"{path}: {w}x{h} pixels (width x height) cannot be resized to "
                        f"{width}x{height} without distorting it; crop or pad it to the "
                        f"aspect ratio of data.image_shape={height}x{width}x{channels}"
                    )
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            array = np.asarray(image, np.uint8)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"{path}: refused by Pillow as a possible decompression bomb ({error}); shrink "
            "the image first"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable PNG or JPEG image ({error})") from None
    return array.reshape(height, width, channels)


def load_folder(directory: str, image_shape: str) -> Dataset:
    """Every image under ``directory`` as a pool of ``image_shape`` (HxWxC), in path order."""
    if not image_shape:
        raise DataError(
            f"folder:{directory}: set data.image_shape (HxWxC, e.g. 28x28x1 or 32x32x3): "
            "every image is converted to it"
        )
    shape = parse_shape(image_shape)
    paths = image_files(directory)
    names, labels = class_folders(paths)
    empty = [name for name in subfolders(directory) if name not in names]
    if labels is not None and empty:  # dropped, it would silently change the classes
        shown = ", ".join(_shown(os.path.join(directory, name)) for name in empty)
        raise DataError(
            f"{shown}: a class folder without images (each subfolder of {directory} is a "
            "class): add its images or remove it"
        )
    images = np.empty((len(paths), *shape), np.uint8)
    for i, relative in enumerate(paths):
        images[i] = read_image(os.path.join(directory, relative), shape)
    return Dataset(
        images, labels, len(names), f"folder:{directory}", paths=tuple(paths), class_names=names
    )
