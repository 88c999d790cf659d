"""Classifier architectures D for MCAL, in flax.linen.

Every model is a ResNet-V1 variant with a CIFAR stem (one 3×3 conv, stride 1, no max-pool:
the ImageNet 7×7/stride-2 stem plus pooling would shrink a 28×28 image to 7×7 before the
first block), followed by stages of residual blocks, global average pooling and a Dense
head. Conv and norm layers are configured once with `functools.partial` and handed to the
blocks, so the compute `dtype` (e.g. bfloat16) is separate from the parameter dtype.

The family (`MODEL_NAMES`):

- `resnet20`, `resnet56`: He et al. (2016, §4.2) CIFAR ResNets, 3 stages of 16-32-64
  filters with n = 3 / n = 9 basic blocks each (6n + 2 layers). These are what the paper
  trained as "RESNET18" (0.27M parameters) and "RESNET50". Their shortcuts are He et al.'s
  option A: identity, subsampled by the stride and zero-padded to the new width when the
  shape changes, so they add no parameters (ResNet-20 with 10 classes: 269,722).
- `resnet18`, `resnet34`, `resnet50`: the ImageNet ResNets with the CIFAR stem, stages of
  64-128-256-512 filters (×4 outputs in the bottleneck blocks of ResNet-50). Shortcuts
  are option B: a 1×1 conv + BatchNorm projection where the shape changes.
- `cnn18`: ResNet-18 with the skip connections removed (16 plain stacked 3×3 convs plus
  stem and head), the paper's description of its "CNN18".
- `tiny`: 1 block per stage, 4-8-16 filters (about 5k parameters), for fast tests.
- `small`: a ResNet-8 (1 block per stage, 16-32-64 filters, about 75k parameters): cheap
  enough for CPU demos at 28×28 yet able to reach about 90% on Fashion-MNIST.

BatchNorm uses momentum 0.9 and epsilon 1e-5. In residual blocks the last BatchNorm of the
branch starts with scale 0 (Goyal et al. 2017), so every block starts as the identity; the
plain `cnn18` keeps scale 1, since a zero scale there would cut the signal. Kernels start
He-normal (fan-out). With `axis_name` set, every BatchNorm averages its batch statistics
over that mesh axis (cross-replica BatchNorm inside `jax.shard_map`), so a data-parallel
step normalises with the statistics of the global batch.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

ModuleDef = Any
# A tree of arrays: a model's variables, their parameters, an optimizer's state. Flax and
# optax type them as Any (or as recursive unions that check nothing more).
PyTree = Any

MODEL_NAMES: tuple[str, ...] = (
    "tiny",
    "small",
    "resnet20",
    "resnet56",
    "cnn18",
    "resnet18",
    "resnet34",
    "resnet50",
)

MIN_INPUT_SIZE = 28


def _zero_pad_shortcut(x: jax.Array, filters: int, strides: int) -> jax.Array:
    """He et al.'s option A: subsample the identity, zero-pad the new channels."""
    x = x[:, ::strides, ::strides, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, filters - x.shape[-1])))


class BasicBlock(nn.Module):
    """Two 3×3 convs; `shortcut` is "projection" (option B), "zero_pad" (option A) or
    "none" (a plain block, no skip connection)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    shortcut: str = "projection"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3))(y)
        if self.shortcut == "none":
            return nn.relu(self.norm()(y))
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            if self.shortcut == "zero_pad":
                residual = _zero_pad_shortcut(residual, self.filters, self.strides)
            else:
                strides = (self.strides, self.strides)
                residual = self.conv(self.filters, (1, 1), strides, name="conv_proj")(residual)
                residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand to 4 × `filters`; projection shortcut (option B)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    shortcut: str = "projection"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            strides = (self.strides, self.strides)
            residual = self.conv(self.filters * 4, (1, 1), strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """CIFAR-stem ResNet-V1: stem, `stage_sizes[i]` blocks of `stage_widths[i]` filters
    (the first block of every stage after the first has stride 2), global average pooling,
    Dense head. Logits are float32 whatever the compute dtype, so the loss and the
    confidence scores (margin, entropy) are computed at full precision."""

    stage_sizes: Sequence[int]
    stage_widths: Sequence[int]
    num_classes: int
    block_cls: ModuleDef = BasicBlock
    shortcut: str = "projection"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        if x.ndim != 4 or x.shape[1] < MIN_INPUT_SIZE or x.shape[2] < MIN_INPUT_SIZE:
            raise ValueError(
                f"mcal_jax.models.ResNet: input must be [N, H, W, C] with H and W at least "
                f"{MIN_INPUT_SIZE}; got shape {tuple(x.shape)}"
            )
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        )
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            axis_name=self.axis_name,
        )
        x = conv(self.stage_widths[0], (3, 3), name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block_cls(
                    width, conv=conv, norm=norm, strides=strides, shortcut=self.shortcut
                )(x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=self.param_dtype)(x)


_CIFAR_WIDTHS = (16, 32, 64)
_IMAGENET_WIDTHS = (64, 128, 256, 512)

# name -> (stage_sizes, stage_widths, block_cls, shortcut)
ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[int, ...], ModuleDef, str]] = {
    "tiny": ((1, 1, 1), (4, 8, 16), BasicBlock, "zero_pad"),
    "small": ((1, 1, 1), _CIFAR_WIDTHS, BasicBlock, "zero_pad"),
    "resnet20": ((3, 3, 3), _CIFAR_WIDTHS, BasicBlock, "zero_pad"),
    "resnet56": ((9, 9, 9), _CIFAR_WIDTHS, BasicBlock, "zero_pad"),
    "cnn18": ((2, 2, 2, 2), _IMAGENET_WIDTHS, BasicBlock, "none"),
    "resnet18": ((2, 2, 2, 2), _IMAGENET_WIDTHS, BasicBlock, "projection"),
    "resnet34": ((3, 4, 6, 3), _IMAGENET_WIDTHS, BasicBlock, "projection"),
    "resnet50": ((3, 4, 6, 3), _IMAGENET_WIDTHS, BottleneckBlock, "projection"),
}
assert tuple(ARCHITECTURES) == MODEL_NAMES


def create_model(
    name: str,
    *,
    num_classes: int,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    axis_name: str | None = None,
) -> nn.Module:
    """The classifier `name` (one of `MODEL_NAMES`) for `num_classes` classes.

    Call it as `model.apply(variables, x, train=False)`, or with `train=True,
    mutable=["batch_stats"]`; `x` is a normalised float batch [N, H, W, C] with H, W ≥ 28
    and any channel count; `variables` holds "params" and "batch_stats". `dtype` is the
    compute dtype (bfloat16 on GPUs), `param_dtype` the storage dtype of the parameters.
    `axis_name` names the mesh axis over which BatchNorm averages batch statistics when
    the model runs inside `jax.shard_map`; None keeps them per device.
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"mcal_jax.models: unknown model name {name!r}; expected one of {MODEL_NAMES}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"mcal_jax.models: num_classes must be an integer >= 2; got {num_classes!r}"
        )
    stage_sizes, stage_widths, block_cls, shortcut = ARCHITECTURES[name]
    return ResNet(
        stage_sizes=stage_sizes,
        stage_widths=stage_widths,
        num_classes=num_classes,
        block_cls=block_cls,
        shortcut=shortcut,
        dtype=dtype,
        param_dtype=param_dtype,
        axis_name=axis_name,
    )


def count_params(params: PyTree) -> int:
    """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
