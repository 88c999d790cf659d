"""Loading the pool X that MCAL labels from a spec string: IDX, npz, npy, TFDS, image folders.

``load_dataset`` reads the spec string and returns a ``Dataset`` (``mcal_jax.dataset``);
bad input raises ``DataError``. Spec strings:

- ``fashion_mnist``: the Debian IDX files in ``DEBIAN_FASHION_MNIST_DIR`` when present
  (``apt-get install dataset-fashion-mnist``), else ``tfds:fashion_mnist``.
- ``tfds:NAME``: any TFDS image-classification dataset (``cifar10``, ``cifar100``, ...),
  read with ``tfds.data_source``. Reading prepared data needs no TensorFlow; preparing a
  fresh download needs network access and may need TensorFlow (the ``tf`` extra).
- ``idx:DIR``: ``train``/``t10k`` IDX files (``-images-idx3-ubyte``, ``-labels-idx1-ubyte``,
  each raw or ``.gz``), as distributed for MNIST and Fashion-MNIST.
- ``npz:PATH``: arrays ``images`` ([N, H, W] or [N, H, W, C], uint8) and ``labels``, and
  optionally a scalar ``num_classes``; pickled arrays are refused.
- ``npy:DIR``: ``images.npy`` memory-mapped (a pool larger than memory), optionally
  ``labels.npy`` and ``classes.json`` (see ``mcal_jax.npy_pool``).
- ``synthetic:KEY=VAL,...``: a learnable synthetic dataset (see ``make_synthetic`` in
  ``mcal_jax.synthetic``).
- ``folder:DIR``: every PNG and JPEG under DIR, converted to ``image_shape`` (``HxWxC``);
  class subfolders, when there are any, are its ground truth (see ``mcal_jax.folder``).

``split="all"`` joins train then test into one pool, as the paper does (its X for
Fashion-MNIST is all 70,000 items).
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from absl import logging

from mcal_jax.dataset import DataError, Dataset
from mcal_jax.folder import load_folder
from mcal_jax.npy_pool import load_npy, save_npy
from mcal_jax.synthetic import make_synthetic, synthetic_split

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "SCHEMES",
    "SPLITS",
    "DataError",
    "Dataset",
    "load_dataset",
    "make_synthetic",
    "read_idx",
    "save_npy",
    "save_npz",
    "write_idx",
]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
SPLITS = ("train", "test", "all")
SCHEMES = (
    "fashion_mnist",
    "tfds:NAME",
    "idx:DIR",
    "npz:PATH",
    "npy:DIR",
    "synthetic:KEY=VAL,...",
    "folder:DIR",
)

# IDX type codes (third magic byte) and the big-endian numpy dtypes they denote.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PREFIXES = {"train": "train", "test": "t10k"}
_TFDS_CHUNK = 4096


def load_dataset(
    spec: str,
    *,
    split: str = "all",
    data_dir: str | None = None,
    download: bool = True,
    image_shape: str = "",
) -> Dataset:
    """Loads the dataset named by ``spec`` (forms in the module docstring).

    Args:
      spec: the dataset spec string.
      split: "train", "test", or "all" (train then test, joined into one pool).
      data_dir: the TFDS data directory (``tfds:`` and the TFDS fallback only); None means
        TFDS's default.
      download: whether a TFDS dataset that is not prepared yet may be downloaded and
        prepared (needs network access, and possibly TensorFlow).
      image_shape: ``HxWxC`` that every image of a ``folder:`` is converted to (required
        there, refused elsewhere: other pools keep their own shape).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {spec!r}; valid splits: {', '.join(SPLITS)}")
    scheme, _, arg = spec.partition(":")
    if image_shape and scheme != "folder":
        raise DataError(
            f"data.image_shape={image_shape!r} applies to folder:DIR datasets only; "
            f"{spec!r} keeps its own image shape"
        )
    if spec == "fashion_mnist":
        files = [_find_idx_file(DEBIAN_FASHION_MNIST_DIR, f) for f in _idx_names(split)]
        if all(files):
            ds = _load_idx(DEBIAN_FASHION_MNIST_DIR, split, name="fashion_mnist", num_classes=10)
            source = DEBIAN_FASHION_MNIST_DIR
        else:
            ds = _load_tfds("fashion_mnist", split, data_dir, download, name="fashion_mnist")
            source = "TFDS"
    elif scheme in ("tfds", "idx", "npz", "npy", "folder") and not arg:
        raise DataError(f"dataset spec {spec!r} has nothing after {scheme + ':'!r}")
    elif scheme == "tfds":
        ds, source = _load_tfds(arg, split, data_dir, download, name=spec), "TFDS"
    elif scheme == "idx":
        ds, source = _load_idx(arg, split, name=spec), arg
    elif scheme == "npz":
        if split != "all":
            raise DataError(f"{spec!r}: an npz file holds one pool; split must be 'all'")
        ds, source = _load_npz(arg), arg
    elif scheme == "npy":
        if split != "all":
            raise DataError(f"{spec!r}: an npy folder holds one pool; split must be 'all'")
        ds, source = load_npy(arg), arg
    elif scheme == "synthetic":
        ds, source = synthetic_split(make_synthetic(arg), split), "generator"
    elif scheme == "folder":
        if split != "all":
            raise DataError(f"{spec!r}: an image folder holds one pool; split must be 'all'")
        ds, source = load_folder(arg, image_shape), arg
    else:
        raise DataError(f"unknown dataset spec {spec!r}; valid forms: {', '.join(SCHEMES)}")
    classes = f"{ds.num_classes} classes" if ds.labels is not None else "no ground truth"
    summary = f"{len(ds)} items of shape {ds.image_shape}, {classes}"
    logging.info("Loaded %s split=%s from %s: %s", ds.name, split, source, summary)
    return ds


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (raw, or gzip when the name ends in .gz) into a native-endian array.

    The format: two zero bytes, a type code, the number of dimensions, then each dimension
    as a big-endian uint32, then the data in big-endian order.
    """
    path = os.fspath(path)
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, no 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: corrupt IDX file: bad magic number 0x{raw[:4].hex()}")
    if raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: corrupt IDX file: unknown data type code 0x{raw[2]:02x}")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file: header of {ndim} dimensions is cut off")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "corrupt"
        raise DataError(
            f"{path}: {problem} IDX file: header says shape {shape} of {dtype.str} "
            f"({expected} bytes), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file, gzip-compressed when the name ends in .gz."""
    path, array = os.fspath(path), np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    if array.dtype not in codes:
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">"), copy=False).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)


def _idx_names(split: str) -> list[str]:
    splits = ["train", "test"] if split == "all" else [split]
    kinds = ("images-idx3-ubyte", "labels-idx1-ubyte")
    return [f"{_IDX_PREFIXES[s]}-{k}" for s in splits for k in kinds]


def _find_idx_file(directory: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _idx_file(directory: str, name: str) -> str:
    path = _find_idx_file(directory, name)
    if path is None:
        raise DataError(f"{directory}: missing IDX file: neither {name} nor {name}.gz found")
    return path


def _load_idx(directory: str, split: str, *, name: str, num_classes: int | None = None) -> Dataset:
    """Reads the IDX pair of each requested split and joins them (train first)."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: IDX directory not found")
    parts = []
    names = _idx_names(split)
    for pair in zip(names[::2], names[1::2], strict=True):
        images_path, labels_path = (_idx_file(directory, n) for n in pair)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            got = f"{images.dtype} {list(images.shape)}"
            raise DataError(f"{images_path}: images are {got}, expected uint8 [N, H, W(, C)]")
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            got = f"{labels.dtype} {list(labels.shape)}"
            raise DataError(f"{labels_path}: labels are {got}, expected integers [N]")
        if len(images) != len(labels):
            counts = f"{len(images)} images but {labels_path} holds {len(labels)} labels"
            raise DataError(f"{images_path} holds {counts}")
        parts.append((images.reshape(images.shape[:3] + (-1,)), labels))
    labels = np.concatenate([p[1] for p in parts])
    if num_classes is None:  # max + 1 over every label file there, so the splits agree on it.
        files = [_find_idx_file(directory, n) for n in _idx_names("all")[1::2]]
        num_classes = 1 + max(int(read_idx(f).max(initial=0)) for f in files if f)
    return Dataset(np.concatenate([p[0] for p in parts]), labels, num_classes, name)


def _load_npz(path: str) -> Dataset:
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("images", "labels") if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; it holds "
                    f"{', '.join(archive.files) or 'nothing'}"
                )
            images, labels = archive["images"], archive["labels"]
            num_classes = archive["num_classes"] if "num_classes" in archive.files else None
    except ValueError as e:
        if isinstance(e, DataError) or "pickle" not in str(e):
            raise
        raise DataError(f"{path}: holds pickled (object) arrays; pickles are refused") from None
    if images.ndim == 3:
        images = images[..., None]
    if num_classes is None:  # max + 1; Dataset's checks report non-integer labels.
        integer = np.issubdtype(labels.dtype, np.integer) and labels.size
        num_classes = np.asarray(int(labels.max()) + 1 if integer else 1)
    if num_classes.shape != () or not np.issubdtype(num_classes.dtype, np.integer):
        raise DataError(
            f"{path}: num_classes must be an integer scalar, got {num_classes.dtype} "
            f"of shape {num_classes.shape}"
        )
    return Dataset(images, labels, int(num_classes), f"npz:{path}")


def save_npz(path: str | os.PathLike, dataset: Dataset) -> None:
    """Writes ``dataset`` so that ``load_dataset("npz:" + path)`` reads it back."""
    if dataset.labels is None:
        raise DataError(f"dataset {dataset.name!r} has no labels; an npz pool needs them")
    np.savez(path, images=dataset.images, labels=dataset.labels, num_classes=dataset.num_classes)


def _load_tfds(
    tfds_name: str, split: str, data_dir: str | None, download: bool, *, name: str
) -> Dataset:
    """Reads the image and label of every record of a prepared TFDS dataset.

    ``tfds.data_source`` reads ArrayRecord files without TensorFlow. Records are read in
    batches of indices; each image is still decoded (PNG) one by one inside TFDS.
    """
    import tensorflow_datasets as tfds  # Slow to import; only this path needs it.

    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for an unknown or broken name.
        problem = str(e).strip().splitlines()[0]  # TFDS appends every dataset name.
        raise DataError(f"tfds:{tfds_name}: cannot open the TFDS builder: {problem}") from None
    features = builder.info.features
    if not all(k in features for k in ("image", "label")):
        raise DataError(
            f"tfds:{tfds_name}: expected features 'image' and 'label', it has "
            f"{', '.join(features.keys())}"
        )
    how_to = (
        f"prepare it once with network access: `pip install mcal_jax[tf]`, then "
        f"load_dataset('tfds:{tfds_name}', download=True) or "
        f"`tfds build {tfds_name} --file_format=array_record`"
    )
    if not builder.is_prepared() and not download:
        raise DataError(f"tfds:{tfds_name}: not prepared in {builder.data_dir}; {how_to}")
    splits = ["train", "test"] if split == "all" else [split]
    try:
        sources = tfds.data_source(tfds_name, split=splits, data_dir=data_dir, download=download)
    except Exception as e:  # Network, missing TensorFlow, wrong file format, unknown split.
        raise DataError(
            f"tfds:{tfds_name}: cannot read split(s) {splits} from {builder.data_dir}: {e}\n"
            f"To {how_to}"
        ) from None
    parts = [
        _read_data_source(s, f"tfds:{tfds_name}[{n}]") for s, n in zip(sources, splits, strict=True)
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    num_classes = getattr(features["label"], "num_classes", None) or int(labels.max()) + 1
    return Dataset(images, labels, int(num_classes), name)


class _RecordSource(Protocol):
    """A TFDS data source: records by index, many at a time."""

    def __len__(self) -> int: ...

    def __getitems__(self, keys: Sequence[int]) -> Sequence[Mapping[str, Any]]: ...


def _read_data_source(source: _RecordSource, where: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images, labels = None, np.empty([n], np.int64)
    for start in range(0, n, _TFDS_CHUNK):
        records = source.__getitems__(list(range(start, min(n, start + _TFDS_CHUNK))))
        try:
            chunk = np.stack([r["image"] for r in records])
        except ValueError as e:
            raise DataError(f"{where}: images differ in shape ({e})") from None
        if images is None:
            images = np.empty((n,) + chunk.shape[1:], chunk.dtype)
        images[start : start + len(chunk)] = chunk
        labels[start : start + len(chunk)] = [r["label"] for r in records]
    if images is None:
        raise DataError(f"{where}: split is empty")
    if images.ndim == 3:
        images = images[..., None]
    return images, labels
