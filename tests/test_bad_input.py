"""Bad input refused before anything is paid for or learned for good, naming the field, file
or line: non-finite and negative settings and prices."""

import math
import re

import pytest

from configs import synthetic
from mcal_jax import run
from mcal_jax.run.settings import Settings

NAN, INF = math.nan, math.inf

# ---------------------------------------------------------------------------- settings


def _config(**fields):
    """The synthetic config on 1,000 items with ``fields`` (dotted names) changed."""
    config = synthetic.get_config("1000")
    with config.unlocked():
        for name, value in fields.items():
            *sections, field = name.split(".")
            node = config
            for section in sections:
                node = node[section]
            node[field] = value
    return config


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"cost.usd_per_device_hour.cpu": NAN},
            "cost.usd_per_device_hour.cpu=nan: must be a finite",
        ),
        (
            {"cost.usd_per_device_hour.cpu": INF},
            "cost.usd_per_device_hour.cpu=inf: must be a finite",
        ),
        ({"mcal.min_delta_fraction": NAN}, "mcal.min_delta_fraction=nan: must be a finite number"),
        ({"mcal.plan_test_fraction": NAN}, "mcal.plan_test_fraction=nan: must be a finite number"),
        ({"mcal.delta0_fraction": -INF}, "mcal.delta0_fraction=-inf: must be a finite number"),
        ({"mcal.epsilon": NAN}, "mcal.epsilon=nan: must be a finite number"),
        ({"mcal.budget_usd": INF}, "mcal.budget_usd=inf: must be a finite number"),
        ({"train.momentum": NAN}, "train.momentum=nan: must be a finite number"),
        ({"baselines.delta_fractions": (0.01, NAN)}, "baselines.delta_fractions[1]=nan: must"),
        (
            {"cost.scoring_fraction_of_image_epoch": -0.5},
            "cost.scoring_fraction_of_image_epoch=-0.5 is negative: a price must be ≥ 0",
        ),
        (
            {"cost.usd_per_image_epoch.resnet56": -1e-6},
            "cost.usd_per_image_epoch.resnet56=-1e-06 is negative: a price must be ≥ 0",
        ),
        (
            {"cost.usd_per_image_epoch.tiny": 1e306},
            "cost.usd_per_image_epoch.tiny=1e+306: 1e+306 USD for each of the 1000 items "
            "overflows a float",
        ),
        (
            # scoring an item with the dearest model: 1e6 x 1e300 USD, 1000 times
            {"cost.scoring_fraction_of_image_epoch": 1e6, "cost.usd_per_image_epoch.tiny": 1e300},
            "cost.scoring_fraction_of_image_epoch=1000000.0: 1e+306 USD for each of the "
            "1000 items overflows",
        ),
        (
            {"labeling.service": "1e308"},
            "labeling.service='1e308': 1e+308 USD for each of the 1000 items overflows a float",
        ),
        (
            {
                "labeling.service": "queue",
                "labeling.usd_per_label": 1e307,
                "cost.usd_per_device_hour.cpu": 2.0,
            },
            "labeling.usd_per_label=1e+307: 1e+307 USD for each of the 1000 items overflows",
        ),
    ],
)
def test_non_finite_and_negative_settings_are_named(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_config(_config(**fields), 1000)


def test_every_non_finite_setting_is_named_at_once():
    config = _config(**{"mcal.stability_tolerance": NAN, "train.weight_decay": INF})
    with pytest.raises(ValueError) as error:
        Settings.from_config(config, 1000)
    assert str(error.value).splitlines() == [
        "invalid config:",
        "  mcal.stability_tolerance=nan: must be a finite number",
        "  train.weight_decay=inf: must be a finite number",
    ]


def test_valid_prices_pass_and_are_the_runs():
    config = _config(
        **{"cost.mode": "per_image_epoch", "cost.scoring_fraction_of_image_epoch": 0.0}
    )
    pricing = Settings.from_config(config, 1000).pricing
    assert pricing.scoring_fraction_of_image_epoch == 0.0
    assert pricing.training_usd("tiny", 1000, 0.0) == pytest.approx(0.0003 / 200 * 0.01 * 1000)


def test_a_nan_price_leaves_nothing_behind_so_the_corrected_command_runs(tmp_path):
    workdir = tmp_path / "run"
    config = _config(**{"cost.usd_per_device_hour.cpu": NAN})
    with pytest.raises(ValueError, match=r"cost\.usd_per_device_hour\.cpu=nan"):
        run.mcal(config, str(workdir))
    # No config.json (nor anything else) to refuse the corrected command with.
    assert not workdir.exists()
