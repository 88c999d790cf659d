"""PyTorch twins of the ResNets of :mod:`mcal_jax.models`, to time the same training in
PyTorch (``python -m benchmarks.train_cost --vs_torch``).

Each twin has the architecture of its Flax namesake: the CIFAR stem (one 3×3 conv, stride
1, no max-pool), the same stages, blocks and widths, option-A zero-padded shortcuts in the
16-32-64 CIFAR ResNets and option-B 1×1 projections in the ImageNet-width ones, the last
BatchNorm of each residual branch starting at scale 0, global average pooling and a
float32 Dense head; so it has the same parameter count (``tests/test_benchmarks_train_cost.py``
checks it where PyTorch is installed). Padding of the stride-2 convs is symmetric here and
"SAME" (one row more at the end) in Flax: the same output shapes and FLOPs.

The training step mirrors ``mcal_jax.train``'s: the data lives on the device as uint8, each
step gathers its global batch from a per-epoch random order (wrapping around at the end),
flips half the images, normalises, and takes an SGD step (Nesterov momentum 0.9, weight
decay on kernels only) under bfloat16 autocast, channels-last. Two versions of the step
are timed: the first compiles only the model and runs the optimizer eagerly; the tuned one
is what a PyTorch expert would run, the whole forward and backward (data preparation
included) compiled, CUDA graphs on a GPU, a fused optimizer. Neither random-crops: a
per-item gather that is small next to the convolutions.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# name -> (stage_sizes, stage_widths, block, shortcut), as in mcal_jax.models.
ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, str]] = {
    "tiny": ((1, 1, 1), (4, 8, 16), "basic", "zero_pad"),
    "small": ((1, 1, 1), (16, 32, 64), "basic", "zero_pad"),
    "resnet20": ((3, 3, 3), (16, 32, 64), "basic", "zero_pad"),
    "resnet56": ((9, 9, 9), (16, 32, 64), "basic", "zero_pad"),
    "cnn18": ((2, 2, 2, 2), (64, 128, 256, 512), "basic", "none"),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512), "basic", "projection"),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512), "basic", "projection"),
    "resnet50": ((3, 4, 6, 3), (64, 128, 256, 512), "bottleneck", "projection"),
}


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)


def _norm(channels: int, zero_scale: bool = False) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)  # Flax momentum 0.9
    if zero_scale:
        nn.init.zeros_(norm.weight)
    return norm


class Block(nn.Module):
    """A basic block (two 3×3 convs) or a bottleneck (1×1, 3×3, 1×1 to 4× width)."""

    def __init__(self, cin: int, filters: int, stride: int, kind: str, shortcut: str):
        super().__init__()
        residual_branch = shortcut != "none"
        if kind == "basic":
            cout = filters
            layers = [_conv(cin, filters, 3, stride), _norm(filters), nn.ReLU()]
            layers += [_conv(filters, filters, 3), _norm(filters, zero_scale=residual_branch)]
        else:
            cout = 4 * filters
            layers = [_conv(cin, filters, 1), _norm(filters), nn.ReLU()]
            layers += [_conv(filters, filters, 3, stride), _norm(filters), nn.ReLU()]
            layers += [_conv(filters, cout, 1), _norm(cout, zero_scale=True)]
        self.branch = nn.Sequential(*layers)
        self.shortcut, self.stride, self.cout = shortcut, stride, cout
        reshapes = stride != 1 or cin != cout
        self.projection = None
        if shortcut == "projection" and reshapes:
            self.projection = nn.Sequential(_conv(cin, cout, 1, stride), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.shortcut == "none":
            return F.relu(y)
        if self.projection is not None:
            x = self.projection(x)
        elif x.shape != y.shape:  # option A: subsample, zero-pad the new channels
            x = x[:, :, :: self.stride, :: self.stride]
            x = F.pad(x, (0, 0, 0, 0, 0, self.cout - x.shape[1]))
        return F.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-stem ResNet-V1 over NCHW (use channels-last memory) float images."""

    def __init__(self, name: str, in_channels: int, num_classes: int):
        super().__init__()
        if name not in ARCHITECTURES:
            raise ValueError(f"torch_resnets: unknown model {name!r}; one of {list(ARCHITECTURES)}")
        sizes, widths, kind, shortcut = ARCHITECTURES[name]
        layers = [_conv(in_channels, widths[0], 3), _norm(widths[0]), nn.ReLU()]
        cin = widths[0]
        for i, (size, width) in enumerate(zip(sizes, widths, strict=True)):
            for j in range(size):
                layers.append(Block(cin, width, 2 if i > 0 and j == 0 else 1, kind, shortcut))
                cin = layers[-1].cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).float().mean(dim=(2, 3))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(pooled)  # float32 logits, as in Flax


# The loss of a network (compiled or not) on the global batch at ``index``, and one
# optimizer step on that batch, returning its loss.
_BatchLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]
_Step = Callable[[torch.Tensor], torch.Tensor]


def _plain_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch_loss: _BatchLoss
) -> _Step:
    """The step as the twin first ran it: the model compiled, the rest eager."""
    compiled = torch.compile(model)

    def step(index: torch.Tensor) -> torch.Tensor:
        loss = batch_loss(compiled, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _tuned_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch_loss: _BatchLoss, device: torch.device
) -> _Step:
    """The step as a PyTorch expert would run it: gather, augmentation, forward and loss
    compiled into one graph (its backward compiled with it by AOTAutograd), CUDA graphs
    over both (``mode="reduce-overhead"``) on a GPU, and the update one fused kernel."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    compiled_loss = torch.compile(lambda index: batch_loss(model, index), mode=mode)

    def step(index: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        loss = compiled_loss(index)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()  # outlives the graph's next replay

    return step


def train_images_per_s(
    model_name: str,
    *,
    batch_size: int,
    image_shape: Sequence[int],
    num_classes: int,
    train_images: int,
    epochs: int,
    repeats: int,
    compute_dtype: str = "bfloat16",
    seed: int = 0,
    tuned: bool = False,
) -> float:
    """Images per second of training ``model_name`` on synthetic data; one untimed run of
    ``epochs`` epochs first (``torch.compile``, cuDNN autotuning), then the median of
    ``repeats`` runs, each ended by a device synchronisation.

    ``tuned=False`` compiles the model only and steps an eager SGD (foreach); ``tuned``
    compiles the whole forward and backward, data preparation included, with CUDA graphs
    on a GPU, and steps a fused SGD (on a GPU; foreach elsewhere).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True
    height, width, channels = image_shape
    model = ResNet(model_name, channels, num_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        **({"fused": True} if tuned and device.type == "cuda" else {}),
    )
    shape = (train_images, channels, height, width)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (train_images,), device=device)
    scaled = images.float() / 255
    mean = scaled.mean(dim=(0, 2, 3), keepdim=True)
    std = scaled.std(dim=(0, 2, 3), keepdim=True)
    del scaled
    steps_per_epoch = math.ceil(train_images / batch_size)
    offsets = torch.arange(batch_size, device=device)
    bf16 = compute_dtype != "float32"

    def batch_loss(net: nn.Module, index: torch.Tensor) -> torch.Tensor:
        x = (images[index].float() / 255 - mean) / std
        flip = torch.rand(batch_size, 1, 1, 1, device=device) < 0.5
        x = torch.where(flip, x.flip(3), x).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return F.cross_entropy(net(x), labels[index])

    if tuned:
        step = _tuned_step(model, optimizer, batch_loss, device)
    else:
        step = _plain_step(model, optimizer, batch_loss)

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(train_images, device=device)
            for i in range(steps_per_epoch):
                loss = step(order[(i * batch_size + offsets) % train_images])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"torch_resnets: {model_name} training loss is {loss}")
        return time.perf_counter() - start

    model.train()
    run()  # compile and warm up
    seconds = statistics.median(run() for _ in range(repeats))
    return steps_per_epoch * batch_size * epochs / seconds
