"""Model FLOPs counted from the architecture, the numerator of MFU.

XLA's cost analysis of a compiled step is no measure of work on a GPU: convolutions there
are cuDNN custom calls, which it does not count (the printed FLOPs come out about 100×
low). The counts here come from the program itself instead: the jaxpr of the forward
pass, or of the whole training step (forward, backward, update), traced on abstract
shapes, with every convolution and matrix product priced at 2 FLOPs per multiply-add.
Elementwise work (normalisation, activations, the optimizer's arithmetic) is left out,
as MFU conventionally does; it is a few percent of a ResNet's convolutions.

Counting the training step's own jaxpr is exact where the "3× forward" rule of thumb is
not: the first convolution needs no gradient with respect to its input, so a ResNet's
step is slightly under three forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from mcal_jax import models


def _shape(aval: jax.core.AbstractValue) -> tuple[int, ...]:
    """The static shape of an operand (those of convolutions and products are shaped)."""
    assert isinstance(aval, jax.core.ShapedArray), aval
    return aval.shape


def _conv_flops(eqn: jex_core.JaxprEqn) -> int:
    """2 × output elements × kernel window × input features per group, over the input
    dilation: a strided convolution's input gradient dilates its operand with zeros, and
    of every window only one position in ∏ lhs_dilation meets a value."""
    rhs = _shape(eqn.invars[1].aval)
    # rhs_spec: (output feature dim, input feature dim, spatial dims...); the input
    # feature dim of the kernel is already the per-group count.
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    macs = math.prod(_shape(eqn.outvars[0].aval)) * rhs[rhs_spec[1]] * window
    return 2 * macs // math.prod(eqn.params["lhs_dilation"])


def _dot_flops(eqn: jex_core.JaxprEqn) -> int:
    """2 × output elements × contracted size."""
    lhs = _shape(eqn.invars[0].aval)
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    contracted = math.prod(lhs[d] for d in lhs_contract)
    return 2 * math.prod(_shape(eqn.outvars[0].aval)) * contracted


_COUNTED: dict[str, Callable[[jex_core.JaxprEqn], int]] = {
    "conv_general_dilated": _conv_flops,
    "dot_general": _dot_flops,
}


def _sub_jaxprs(eqn: jex_core.JaxprEqn) -> Iterator[tuple[jex_core.Jaxpr, int]]:
    """(jaxpr, times it runs) of every program nested in ``eqn``: the body of a jit,
    a custom derivative, a remat, a scan (× its length), the branches of a cond (the most
    expensive one counts, see :func:`jaxpr_flops`)."""
    for value in eqn.params.values():
        values = value if isinstance(value, tuple | list) else (value,)
        for v in values:
            inner = getattr(v, "jaxpr", v)
            if isinstance(inner, jex_core.Jaxpr):
                times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
                yield inner, times


def jaxpr_flops(jaxpr: jex_core.Jaxpr | jex_core.ClosedJaxpr) -> int:
    """FLOPs of the convolutions and matrix products of ``jaxpr`` (a ``ClosedJaxpr`` or
    ``Jaxpr``), nested programs included. A while loop's body counts once (its trip
    count is not static); of a cond's branches, the most expensive."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        counter = _COUNTED.get(eqn.primitive.name)
        if counter is not None:
            total += counter(eqn)
            continue
        nested = list(_sub_jaxprs(eqn))
        if eqn.primitive.name == "cond":
            total += max((jaxpr_flops(j) * t for j, t in nested), default=0)
        else:
            total += sum(jaxpr_flops(j) * t for j, t in nested)
    return total


def function_flops(fn: Callable[..., object], *args: object, **kwargs: object) -> int:
    """FLOPs of one call of ``fn`` on ``args`` (arrays or ``jax.ShapeDtypeStruct``s),
    traced, never run."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


def model_flops_per_image(
    name: str, image_shape: Sequence[int], num_classes: int, *, training: bool = True
) -> float:
    """FLOPs per image of model ``name`` on ``image_shape`` (H, W, C) images: the forward
    pass, or with ``training`` the forward and backward passes of a cross-entropy step
    (gradients of the parameters, as the trainer takes them)."""
    batch = 2  # any batch: the count is linear in it; 2 keeps BatchNorm's statistics honest
    model = models.create_model(name, num_classes=num_classes)
    images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)

    def forward(variables: models.PyTree, images: jax.Array) -> jax.Array:
        # Without `mutable`, apply returns the output alone, not (output, variables).
        return model.apply(variables, images, train=False)  # type: ignore[return-value]

    def loss(
        params: models.PyTree, batch_stats: models.PyTree, images: jax.Array, labels: jax.Array
    ) -> jax.Array:
        logits, _ = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        one_hot = jax.nn.one_hot(labels, num_classes)
        return -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1))

    if training:
        flops = function_flops(
            jax.grad(loss), variables["params"], variables["batch_stats"], images, labels
        )
    else:
        flops = function_flops(forward, variables, images)
    return flops / batch


def analytic_resnet_flops(name: str, image_shape: Sequence[int], num_classes: int) -> float:
    """The forward FLOPs per image of a ResNet of :mod:`mcal_jax.models`, by hand: every
    3×3 and 1×1 convolution at its output resolution, the projection shortcuts and the
    head. A check of :func:`model_flops_per_image` that shares none of its machinery."""
    sizes, widths, block, shortcut = models.ARCHITECTURES[name]
    height, width, channels = image_shape
    h, w = height, width
    flops = 2 * h * w * 9 * channels * widths[0]  # stem
    cin = widths[0]
    for i, (size, filters) in enumerate(zip(sizes, widths, strict=True)):
        for j in range(size):
            stride = 2 if i > 0 and j == 0 else 1
            reduce = 2 * h * w * cin * filters  # a bottleneck's 1×1 runs before the stride
            h, w = -(-h // stride), -(-w // stride)
            if block is models.BottleneckBlock:
                cout = 4 * filters
                flops += reduce + 2 * h * w * (9 * filters * filters + filters * cout)
            else:
                cout = filters
                flops += 2 * h * w * 9 * (cin * filters + filters * filters)
            if shortcut == "projection" and (stride != 1 or cin != cout):
                flops += 2 * h * w * cin * cout
            cin = cout
    return float(flops + 2 * cin * num_classes)
