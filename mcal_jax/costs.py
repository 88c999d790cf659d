"""What device time costs: the C_train and C_score terms of the total cost (Eq. 1).

Two ways to price a round (``cost.mode`` of a run's config):

- ``"measured"``: device seconds × the rental price of the device (USD per device-hour,
  looked up in :data:`USD_PER_DEVICE_HOUR` by device kind, else by platform);
- ``"per_image_epoch"``: a fixed price per image-epoch of training, to compare with the
  paper, whose Table 1 gives 0.0003 USD per image for a 200-epoch RESNET18 training;
  scoring one item costs ``scoring_fraction_of_image_epoch`` of one image-epoch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax

# Rental price of one device, USD per device-hour, by JAX device kind or platform.
USD_PER_DEVICE_HOUR: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 3.00,
    "NVIDIA H200": 3.50,
    "NVIDIA A100-SXM4-80GB": 1.50,
    "NVIDIA A100-SXM4-40GB": 1.20,
    "gpu": 2.00,  # any other GPU
    "tpu": 2.00,
    "cpu": 0.10,  # a 2-core cloud VM
}

COST_MODES = ("measured", "per_image_epoch")


def device_usd_per_hour(
    prices: Mapping[str, float] = USD_PER_DEVICE_HOUR, device: jax.Device | None = None
) -> float | None:
    """The price of ``device`` (default: this process's first device) in ``prices``: by its
    device kind, else by its platform; None when neither is listed."""
    device = device or jax.devices()[0]
    price = prices.get(device.device_kind, prices.get(device.platform))
    return None if price is None else float(price)


@dataclasses.dataclass(frozen=True)
class Pricing:
    """How a run turns a round's measurements into USD.

    ``usd_per_device_hour`` is this machine's rate (``measured``); ``usd_per_image_epoch``
    the per-model rates (``per_image_epoch``).
    """

    mode: str
    usd_per_device_hour: float
    usd_per_image_epoch: Mapping[str, float]
    scoring_fraction_of_image_epoch: float

    def training_usd(self, model: str, images: float, device_seconds: float) -> float:
        """C_train of one round that put ``images`` images through forward and backward
        (an image-epoch is one image processed once)."""
        if self.mode == "per_image_epoch":
            return images * self.usd_per_image_epoch[model]
        return device_seconds / 3600 * self.usd_per_device_hour

    def scoring_usd(self, model: str, items: int, device_seconds: float) -> float:
        """C_score of one round: ``items`` forward passes of one image (an item scored
        by an ensemble, or with its mirror too, counts once per pass)."""
        if self.mode == "per_image_epoch":
            rate = self.usd_per_image_epoch[model]
            return items * rate * self.scoring_fraction_of_image_epoch
        return device_seconds / 3600 * self.usd_per_device_hour


def price_problem(shown: str, usd: float, num_items: int | None = None) -> str | None:
    """What is wrong with the price ``usd`` (shown as ``shown``, the field and its value)
    of one item, or None: negative, or bought for all ``num_items`` items, a sum that is
    no finite number."""
    if usd < 0:
        return f"{shown} is negative: a price must be ≥ 0"
    if num_items is not None and not math.isfinite(usd * num_items):
        return (
            f"{shown}: {usd} USD for each of the {num_items} items overflows a float "
            "(the total is infinite); give a price in USD"
        )
    return None
