"""Synthetic pools: a deterministic, learnable image-classification dataset made from a seed.

``make_synthetic`` builds the pool named by a ``synthetic:KEY=VAL,...`` spec string's
parameters; ``SyntheticGenerator`` makes the same pool a range of items at a time, for pools
larger than memory; ``synthetic_split`` cuts it into the train and test splits
``load_dataset`` serves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mcal_jax.dataset import DataError, Dataset

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
    generator = SyntheticGenerator.from_params(params)
    return Dataset(
        generator.images(0, generator.num_items),
        generator.labels,
        generator.num_classes,
        generator.name,
    )


@dataclasses.dataclass(frozen=True, eq=False)  # Arrays: compare by identity.
class SyntheticGenerator:
    """The pool of a ``synthetic:`` spec, made a range of items at a time: ``images(a, b)``
    are items a..b-1 of ``make_synthetic``'s pool, byte for byte, so a pool larger than
    memory can be written piece by piece (``benchmarks.make_pool``).

    Attributes:
      name: the spec string with every parameter spelled out.
      labels: int32 [n], each item's class (all of them: 4 bytes an item).
      num_classes: the number of classes.
      seed: the seed; each block of ``_SYNTHETIC_CHUNK`` items draws from its own stream.
      coarse: float32 [classes, GRID, GRID, C], the class templates on the coarse grid.
      rolled_h, rolled_w: float32 [shifts, H, GRID] and [shifts, W, GRID], the upsamplers
        circularly shifted by each shift.
      noise_scale: the factor of the coarse smooth noise.
      contrast: the factor of the upsampled image before it is centred on 128.
    """

    name: str
    labels: np.ndarray
    num_classes: int
    seed: int
    coarse: np.ndarray
    rolled_h: np.ndarray
    rolled_w: np.ndarray
    noise_scale: float
    contrast: float

    @property
    def num_items(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return self.rolled_h.shape[1], self.rolled_w.shape[1], self.coarse.shape[-1]

    @classmethod
    def from_params(cls, params: str) -> SyntheticGenerator:
        """The generator of "KEY=VAL,..." (keys in ``make_synthetic``); DataError naming the
        spec for a bad key or value."""
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
        if (
            min(n, classes - 1, height, width, channels, seed + 1) < 1
            or not noise >= 0
            or shift < 0
        ):
            raise DataError(f"{where}: need n, H, W, C >= 1, classes >= 2, seed, noise, shift >= 0")
        name = (
            f"synthetic:n={n},shape={height}x{width}x{channels},classes={classes},"
            f"seed={seed},noise={noise:g},shift={shift}"
        )

        # Everything is built on the coarse grid and upsampled once per image; upsampling
        # with circularly shifted interpolation rows is the same as shifting the upsampled
        # image.
        rng = np.random.default_rng(seed)
        grid = (_SYNTHETIC_GRID, _SYNTHETIC_GRID, channels)
        up_h, up_w = _periodic_upsampler(height), _periodic_upsampler(width)
        coarse = rng.standard_normal((classes,) + grid).astype(np.float32)
        fine = np.einsum("hi,nijc,wj->nhwc", up_h, coarse, up_w)
        # Rows of the upsamplers sum to 1, so normalising on the coarse grid normalises the
        # image.
        mean, std = fine.mean(axis=(1, 2, 3)), fine.std(axis=(1, 2, 3))
        coarse = (coarse - mean[:, None, None, None]) / std[:, None, None, None]
        noise_std = np.sqrt((up_h**2).sum(1).mean() * (up_w**2).sum(1).mean())  # upsampled N(0,1)
        shifts = np.arange(-shift, shift + 1)
        return cls(
            name=name,
            labels=rng.permutation(np.arange(n) % classes).astype(np.int32),
            num_classes=classes,
            seed=seed,
            coarse=coarse,
            rolled_h=np.stack([np.roll(up_h, s, axis=0) for s in shifts]),  # [shifts, H, GRID]
            rolled_w=np.stack([np.roll(up_w, s, axis=0) for s in shifts]),
            noise_scale=float(noise / noise_std),
            contrast=40.0 / (1.0 + noise**2) ** 0.5,  # Pixel std of about 40 at any noise.
        )

    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 [stop - start, H, W, C]: items start..stop-1. Each block of
        ``_SYNTHETIC_CHUNK`` items is made whole from its own random stream, so a range
        that does not start and end on block boundaries costs up to two blocks more."""
        start, stop = max(0, start), min(stop, self.num_items)
        out = np.empty((max(0, stop - start), *self.image_shape), np.uint8)
        first = start - start % _SYNTHETIC_CHUNK
        for block in range(first, stop, _SYNTHETIC_CHUNK):
            images = self._block(block)
            lo, hi = max(start, block), min(stop, block + len(images))
            out[lo - start : hi - start] = images[lo - block : hi - block]
        return out

    def _block(self, start: int) -> np.ndarray:
        """uint8 [<= _SYNTHETIC_CHUNK, H, W, C]: the block of items from ``start``."""
        chunk_rng = np.random.default_rng([self.seed, start])
        y = self.labels[start : start + _SYNTHETIC_CHUNK]
        z = chunk_rng.standard_normal((len(y),) + self.coarse.shape[1:], np.float32)
        z = self.coarse[y] + self.noise_scale * z
        dy, dx = chunk_rng.integers(0, len(self.rolled_h), size=(2, len(y)))
        rows = np.matmul(self.rolled_h[dy][:, None], z.transpose(0, 3, 1, 2))  # [n, C, H, GRID]
        x = np.matmul(rows, self.rolled_w[dx].transpose(0, 2, 1)[:, None])  # [n, C, H, W]
        x *= self.contrast
        x += 128.0
        x += chunk_rng.integers(-8, 9, size=x.shape, dtype=np.int8)  # Faint pixel noise.
        return np.clip(x, 0, 255, out=x).transpose(0, 2, 3, 1).astype(np.uint8)


def synthetic_split(pool: Dataset, split: str) -> Dataset:
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
