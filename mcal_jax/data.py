"""The pool X that MCAL labels: images and their ground-truth labels, loaded from a spec string.

A ``Dataset`` holds the whole pool in host memory as uint8 NHWC images and int32 labels;
the ground-truth labels play the human annotator in simulation. Spec strings:

- ``fashion_mnist``: the Debian IDX files in ``DEBIAN_FASHION_MNIST_DIR`` when present
  (``apt-get install dataset-fashion-mnist``), else ``tfds:fashion_mnist``.
- ``tfds:NAME``: any TFDS image-classification dataset (``cifar10``, ``cifar100``, ...),
  read with ``tfds.data_source``. Reading prepared data needs no TensorFlow; preparing a
  fresh download needs network access and may need TensorFlow (the ``tf`` extra).
- ``idx:DIR``: ``train``/``t10k`` IDX files (``-images-idx3-ubyte``, ``-labels-idx1-ubyte``,
  each raw or ``.gz``), as distributed for MNIST and Fashion-MNIST.
- ``npz:PATH``: arrays ``images`` ([N, H, W] or [N, H, W, C], uint8) and ``labels``, and
  optionally a scalar ``num_classes``; pickled arrays are refused.
- ``synthetic:KEY=VAL,...``: a learnable synthetic dataset (see ``make_synthetic``).

``split="all"`` joins train then test into one pool, as the paper does (its X for
Fashion-MNIST is all 70,000 items).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zipfile
import zlib

import numpy as np
import numpy.typing as npt
from absl import logging

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
SPLITS = ("train", "test", "all")
SCHEMES = ("fashion_mnist", "tfds:NAME", "idx:DIR", "npz:PATH", "synthetic:KEY=VAL,...")

# IDX type codes (third magic byte) and the big-endian numpy dtypes they denote.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PREFIXES = {"train": "train", "test": "t10k"}
_TFDS_CHUNK = 4096


class DataError(ValueError):
    """Bad input to a dataset loader: the message names the file or dataset and the problem."""


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class Dataset:
    """Images and labels of a pool, validated on construction.

    Attributes:
      images: uint8 [N, H, W, C] (C = 1 for grayscale, so always rank 4).
      labels: int32 [N], each in [0, num_classes).
      num_classes: number of classes.
      name: where the data came from (the spec string), used in messages.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self):
        images, labels = np.asarray(self.images), np.asarray(self.labels)

        def check(ok: bool, problem: str) -> None:
            if not ok:
                raise DataError(f"dataset {self.name!r}: {problem}")

        check(images.dtype == np.uint8, f"images have dtype {images.dtype}, expected uint8")
        check(images.ndim == 4, f"images have shape {images.shape}, expected [N, H, W, C]")
        check(np.issubdtype(labels.dtype, np.integer), f"labels have dtype {labels.dtype}")
        check(labels.ndim == 1, f"labels have shape {labels.shape}, expected [N]")
        check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
        k = self.num_classes
        check(isinstance(k, int | np.integer) and k >= 1, f"num_classes {k!r} is not an int >= 1")
        bad = np.flatnonzero((labels < 0) | (labels >= k))
        if bad.size:
            i = bad[0]
            check(False, f"label {labels[i]} at index {i} is outside [0, {k}) ({bad.size} such)")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    def subset(self, indices: npt.ArrayLike) -> Dataset:
        """The items at ``indices`` (integer indices or a boolean mask), in that order."""
        indices = np.asarray(indices)
        return Dataset(self.images[indices], self.labels[indices], self.num_classes, self.name)


def load_dataset(
    spec: str, *, split: str = "all", data_dir: str | None = None, download: bool = True
) -> Dataset:
    """Loads the dataset named by ``spec`` (forms in the module docstring).

    Args:
      spec: the dataset spec string.
      split: "train", "test", or "all" (train then test, joined into one pool).
      data_dir: the TFDS data directory (``tfds:`` and the TFDS fallback only); None means
        TFDS's default.
      download: whether a TFDS dataset that is not prepared yet may be downloaded and
        prepared (needs network access, and possibly TensorFlow).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {spec!r}; valid splits: {', '.join(SPLITS)}")
    scheme, _, arg = spec.partition(":")
    if spec == "fashion_mnist":
        files = [_find_idx_file(DEBIAN_FASHION_MNIST_DIR, f, False) for f in _idx_names(split)]
        if all(files):
            ds = _load_idx(DEBIAN_FASHION_MNIST_DIR, split, name="fashion_mnist", num_classes=10)
            source = DEBIAN_FASHION_MNIST_DIR
        else:
            ds = _load_tfds("fashion_mnist", split, data_dir, download, name="fashion_mnist")
            source = "TFDS"
    elif scheme in ("tfds", "idx", "npz") and not arg:
        raise DataError(f"dataset spec {spec!r} has nothing after {scheme + ':'!r}")
    elif scheme == "tfds":
        ds, source = _load_tfds(arg, split, data_dir, download, name=spec), "TFDS"
    elif scheme == "idx":
        ds, source = _load_idx(arg, split, name=spec), arg
    elif scheme == "npz":
        if split != "all":
            raise DataError(f"{spec!r}: an npz file holds one pool; split must be 'all'")
        ds, source = _load_npz(arg), arg
    elif scheme == "synthetic":
        ds, source = _synthetic_split(make_synthetic(arg), split), "generator"
    else:
        raise DataError(f"unknown dataset spec {spec!r}; valid forms: {', '.join(SCHEMES)}")
    summary = f"{len(ds)} items of shape {ds.image_shape}, {ds.num_classes} classes"
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


def _find_idx_file(directory: str, name: str, required: bool = True) -> str | None:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    if required:
        raise DataError(f"{directory}: missing IDX file: neither {name} nor {name}.gz found")
    return None


def _load_idx(directory: str, split: str, *, name: str, num_classes: int | None = None) -> Dataset:
    """Reads the IDX pair of each requested split and joins them (train first)."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: IDX directory not found")
    parts = []
    names = _idx_names(split)
    for pair in zip(names[::2], names[1::2], strict=True):
        images_path, labels_path = (_find_idx_file(directory, n) for n in pair)
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
        files = [_find_idx_file(directory, n, False) for n in _idx_names("all")[1::2]]
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


def _read_data_source(source, where: str) -> tuple[np.ndarray, np.ndarray]:
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


_SYNTHETIC_DEFAULTS = {"n": 2000, "shape": "32x32x3", "classes": 10, "seed": 0, "noise": 1.5}
_SYNTHETIC_GRID = 4  # Templates and structured noise vary on a 4 x 4 grid: low frequency.
_SYNTHETIC_CHUNK = 4096


def make_synthetic(params: str = "") -> Dataset:
    """A deterministic, learnable synthetic pool, parameterised by "KEY=VAL,..." (all optional).

    Keys: ``n`` items (2000), ``shape`` HxWxC (32x32x3), ``classes`` (10), ``seed`` (0),
    ``noise`` (1.5), ``shift`` (H // 8). Each class is a fixed random smooth template (unit
    standard deviation); an image is its class's template plus smooth noise of standard
    deviation ``noise``, circularly shifted by up to ``shift`` pixels each way, plus faint
    pixel noise. The smooth noise lives in the same low frequencies as the templates, so
    some images look like another class: a convnet learns it well but not perfectly, more
    so with more labels, and ``noise`` sets how hard it is (at 1.5 on 32x32x3, a
    nearest-template rule that knows the templates gets about 96% right; a small convnet
    trained on 6,000 items about 84%). Classes are balanced to within one item.
    """
    where = f"synthetic:{params}"
    values: dict[str, str] = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _SYNTHETIC_DEFAULTS | {"shift": None}:
            valid = ", ".join(list(_SYNTHETIC_DEFAULTS) + ["shift"])
            raise DataError(f"{where}: bad item {item!r}; expected KEY=VAL with KEY in {valid}")
        values[key] = value
    config = {**{k: str(v) for k, v in _SYNTHETIC_DEFAULTS.items()}, **values}
    try:
        n, classes, seed = int(config["n"]), int(config["classes"]), int(config["seed"])
        noise = float(config["noise"])
        height, width, channels = (int(d) for d in config["shape"].split("x"))
        shift = int(values["shift"]) if "shift" in values else height // 8
    except ValueError as e:
        raise DataError(f"{where}: bad value ({e}); shape is HxWxC, e.g. 32x32x3") from None
    if min(n, classes - 1, height, width, channels, seed + 1) < 1 or not noise >= 0 or shift < 0:
        raise DataError(f"{where}: need n, H, W, C >= 1, classes >= 2, seed, noise, shift >= 0")
    name = (
        f"synthetic:n={n},shape={height}x{width}x{channels},classes={classes},"
        f"seed={seed},noise={noise:g},shift={shift}"
    )

    # Everything is built on the coarse grid and upsampled once per image; upsampling with
    # circularly shifted interpolation rows is the same as shifting the upsampled image.
    rng = np.random.default_rng(seed)
    grid = (_SYNTHETIC_GRID, _SYNTHETIC_GRID, channels)
    up_h, up_w = _periodic_upsampler(height), _periodic_upsampler(width)
    coarse = rng.standard_normal((classes,) + grid).astype(np.float32)
    fine = np.einsum("hi,nijc,wj->nhwc", up_h, coarse, up_w)
    # Rows of the upsamplers sum to 1, so normalising on the coarse grid normalises the image.
    mean, std = fine.mean(axis=(1, 2, 3)), fine.std(axis=(1, 2, 3))
    coarse = (coarse - mean[:, None, None, None]) / std[:, None, None, None]
    noise_std = np.sqrt((up_h**2).sum(1).mean() * (up_w**2).sum(1).mean())  # of upsampled N(0,1)
    shifts = np.arange(-shift, shift + 1)
    rolled_h = np.stack([np.roll(up_h, s, axis=0) for s in shifts])  # [shifts, H, GRID]
    rolled_w = np.stack([np.roll(up_w, s, axis=0) for s in shifts])
    contrast = 40.0 / (1.0 + noise**2) ** 0.5  # Pixel std of about 40 at any noise level.
    labels = rng.permutation(np.arange(n) % classes).astype(np.int32)
    images = np.empty((n, height, width, channels), np.uint8)
    for start in range(0, n, _SYNTHETIC_CHUNK):
        chunk_rng = np.random.default_rng([seed, start])
        y = labels[start : start + _SYNTHETIC_CHUNK]
        z = chunk_rng.standard_normal((len(y),) + grid, np.float32)
        z = coarse[y] + (noise / noise_std) * z
        dy, dx = chunk_rng.integers(0, len(shifts), size=(2, len(y)))
        rows = np.matmul(rolled_h[dy][:, None], z.transpose(0, 3, 1, 2))  # [n, C, H, GRID]
        x = np.matmul(rows, rolled_w[dx].transpose(0, 2, 1)[:, None])  # [n, C, H, W]
        x *= contrast
        x += 128.0
        x += chunk_rng.integers(-8, 9, size=x.shape, dtype=np.int8)  # Faint pixel noise.
        images[start : start + len(y)] = np.clip(x, 0, 255, out=x).transpose(0, 2, 3, 1)
    return Dataset(images, labels, classes, name)


def _synthetic_split(pool: Dataset, split: str) -> Dataset:
    """The "test" split is the last n // 7 items (6:1, as in Fashion-MNIST); "train" the rest."""
    num_test = len(pool) // 7
    if split == "all":
        return pool
    if split == "test" and num_test == 0:
        raise DataError(f"{pool.name}: too few items ({len(pool)}) for a test split")
    cut = len(pool) - num_test
    return pool.subset(np.arange(cut, len(pool)) if split == "test" else np.arange(cut))


def _periodic_upsampler(size: int) -> np.ndarray:
    """[size, GRID] weights of periodic linear interpolation, so circular shifts leave no seam."""
    position = np.arange(size) * _SYNTHETIC_GRID / size
    low = np.floor(position).astype(int)
    frac = (position - low).astype(np.float32)
    weights = np.zeros((size, _SYNTHETIC_GRID), np.float32)
    np.add.at(weights, (np.arange(size), low % _SYNTHETIC_GRID), 1 - frac)
    np.add.at(weights, (np.arange(size), (low + 1) % _SYNTHETIC_GRID), frac)
    return weights
