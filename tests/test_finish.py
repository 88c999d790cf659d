"""The final labeling's warning when the machine labels are no better than guessing."""

import logging

from mcal_jax.profile import MachineLabelingChoice
from mcal_jax.run.finish import warn_if_at_chance


def _choice(num_machine, upper_bound):
    return MachineLabelingChoice(
        theta=0.05,
        threshold=0.9,
        num_machine=num_machine,
        estimated_error=upper_bound / 2,
        upper_bound=upper_bound,
        confidence=0.95,
        constraint="overall",
        tested=1,
    )


def test_warns_when_the_machine_labels_bound_reaches_chance(caplog):
    with caplog.at_level(logging.WARNING):
        assert warn_if_at_chance(_choice(60, 0.953), num_classes=10)  # chance error: 90%
    assert "95.3% is at or above chance error 90.0%" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not warn_if_at_chance(_choice(60, 0.3), num_classes=10)
        assert not warn_if_at_chance(_choice(0, 1.0), num_classes=10)  # nothing machine-labeled
        assert warn_if_at_chance(_choice(5, 0.5), num_classes=2)
    assert caplog.text.count("chance error") == 1
