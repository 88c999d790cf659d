r"""Writes a folder of real Fashion-MNIST images to label, and their ground truth apart.

  python -m examples.fashion_folder --out=workdirs/fashion_folder --count=3000

``OUT/images/00000.png ...`` are the first COUNT images of Fashion-MNIST's test split (28x28
grayscale PNGs, one flat folder: no label is visible in it), and ``OUT/truth.csv``
(``path,label``, the class names) is what the people of ``examples.answer_from_truth``
know. The images come from Debian's dataset-fashion-mnist, else from TFDS.
"""

import argparse
import csv
import os

from PIL import Image

from mcal_jax import files
from mcal_jax.data import load_dataset

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def write_folder(out: str, count: int) -> int:
    """Writes ``count`` images and ``truth.csv`` under ``out``; returns the count."""
    pool = load_dataset("fashion_mnist", split="test")
    assert pool.labels is not None
    if not 0 < count <= len(pool):
        raise ValueError(f"--count={count}: choose 1 to {len(pool)}")
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rows = [("path", "label")]
    for i in range(count):
        path = f"{i:05d}.png"
        Image.fromarray(pool.images[i, :, :, 0]).save(os.path.join(out, "images", path))
        rows.append((path, CLASSES[pool.labels[i]]))
    with open(os.path.join(out, "truth.csv.tmp"), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    os.replace(os.path.join(out, "truth.csv.tmp"), os.path.join(out, "truth.csv"))
    files.fsync_directory(out)
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write images/ and truth.csv to")
    parser.add_argument("--count", type=int, default=3000, help="images to write")
    args = parser.parse_args()
    print(f"wrote {write_folder(args.out, args.count)} images to {args.out}/images")
