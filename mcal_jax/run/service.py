"""``labeling.service``: who sells a run's human labels, and at what price.

A simulated service (``amazon``, ``satyam`` or a price in USD) sells the pool's ground
truth; people answer through a file queue (``queue:QDIR``) or a live Label Studio project
(``labelstudio:URL``), at ``labeling.usd_per_label`` each. `labeling` checks the section
with the rest of the settings, before anything is paid for.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from mcal_jax import costs, labelers


@dataclasses.dataclass(frozen=True)
class LabelingSettings:
    """Who sells the human labels: a simulated labeler that reads the ground truth (both
    None), people answering the request files of a queue folder (``queue``; "" is the
    workdir's ``queue/``) or the tasks of the Label Studio ``project`` at ``label_studio``
    (a URL; with the model's ``suggestions``), checked again every ``poll_seconds`` when
    the run should ``wait`` for them instead of stopping (README, "Label your own
    images")."""

    queue: str | None = None
    wait: bool = False
    poll_seconds: float = 10.0
    label_studio: str | None = None
    project: str = ""
    suggestions: bool = False

    @property
    def people(self) -> bool:
        return self.queue is not None or self.label_studio is not None


def labeling(
    config: ml_collections.ConfigDict, num_items: int, problems: list[str]
) -> tuple[LabelingSettings, float, bool]:
    """(who labels, USD per label, whether the price is valid) of ``config.labeling``."""
    lab = config.labeling
    service, price = lab.service, lab.usd_per_label
    kind, _, where = service.partition(":") if isinstance(service, str) else ("", "", "")
    if lab.suggestions and kind != "labelstudio":
        problems.append("labeling.suggestions=True: suggestions go to Label Studio tasks")
    if kind not in ("queue", "labelstudio"):
        if price is not None:
            problems.append(
                f"labeling.usd_per_label={price}: the price of labels from people (queue: or "
                "labelstudio:); a simulated service's price is labeling.service"
            )
        try:
            price = labelers.usd_per_label(service)
        except (TypeError, ValueError) as error:
            problems.append(f"labeling.service: {error}")
            return LabelingSettings(), 1.0, False  # a stand-in price
        wrong = costs.price_problem(f"labeling.service={service!r}", price, num_items)
        if wrong:
            problems.append(wrong)
        return LabelingSettings(), 1.0 if wrong else price, not wrong
    priced = isinstance(price, int | float) and math.isfinite(price) and price > 0
    if not priced:
        problems.append(
            f"labeling.usd_per_label={price}: set the price of one label from people in USD "
            f"(a number > 0, e.g. 0.04) with labeling.service={kind}:"
        )
    elif wrong := costs.price_problem(f"labeling.usd_per_label={price}", price, num_items):
        problems.append(wrong)
        priced = False
    if lab.error_rate:
        problems.append(
            f"labeling.error_rate={lab.error_rate}: simulated label noise needs a simulated "
            f"labeling.service, not {kind}:"
        )
    if config.baselines.run:
        problems.append(
            f"baselines.run=True: the baselines simulate labelers; with labeling.service={kind}: "
            "set baselines.run=False"
        )
    if not (isinstance(lab.poll_seconds, int | float) and lab.poll_seconds > 0):
        problems.append(f"labeling.poll_seconds={lab.poll_seconds} must be > 0")
    if kind == "labelstudio" and not where.startswith(("http://", "https://")):
        problems.append(f"labeling.service={service!r}: give the server, labelstudio:http://…")
    queue, label_studio = (where, None) if kind == "queue" else (None, where)
    settings = LabelingSettings(
        queue, bool(lab.wait), float(lab.poll_seconds), label_studio, str(lab.project),
        bool(lab.suggestions),
    )  # fmt: skip
    return settings, float(price) if priced else 1.0, priced
