"""A device's share of a training step in slices (``train.microbatch_size``): the loss and
its gradients summed over the slices, each slice with an equal share of the labeled and the
pseudo-labeled rows, and the BatchNorm statistics averaged over them."""

from __future__ import annotations

from collections.abc import Callable

import jax

from mcal_jax.models import PyTree

# loss_fn(params, *batch) -> (loss summed over the batch's rows, updated batch statistics)
LossFn = Callable[..., tuple[jax.Array, PyTree]]


def interleave(rows: jax.Array, parts: int, slices: int) -> jax.Array:
    """[parts × local, ...] (the labeled rows, then each pseudo-labeled part of as many) to
    [slices, parts × local / slices, ...]: slice i holds the i-th share of every part."""
    shape = rows.shape[1:]
    split = rows.reshape(parts, slices, -1, *shape).swapaxes(0, 1)
    return split.reshape(slices, -1, *shape)


def value_and_grad(
    loss_fn: LossFn, params: PyTree, batch: tuple[jax.Array, ...], slices: int, parts: int
) -> tuple[jax.Array, PyTree, PyTree]:
    """(loss, batch statistics, gradients) of ``loss_fn`` over ``batch`` (arrays of equal
    rows) in ``slices`` slices of its ``parts`` (`interleave`); one slice: the plain call.
    Running statistics updated from each slice and averaged move as one update from the
    slices' mean statistics would."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if slices == 1:
        (loss, stats), grads = grad_fn(params, *batch)
        return loss, stats, grads
    split = [interleave(a, parts, slices) for a in batch]
    # Unrolled, not a scan: XLA:CPU runs convolutions inside a device-side loop far slower.
    results = [grad_fn(params, *(a[i] for a in split)) for i in range(slices)]
    loss = sum(loss for (loss, _), _ in results)
    stats = jax.tree.map(lambda *s: sum(s) / slices, *(stats for (_, stats), _ in results))
    grads = jax.tree.map(lambda *g: sum(g), *(grads for _, grads in results))
    return jax.numpy.asarray(loss), stats, grads
