"""Tests for mcal_jax.models: parameter counts, shapes, dtypes, BatchNorm behaviour."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mcal_jax.models import MODEL_NAMES, count_params, create_model

# Cheap enough to compile and run on a CPU; the others are only traced with eval_shape.
SMALL_MODELS = ("tiny", "small", "resnet20")
IMAGENET_WIDTHS = (64, 128, 256, 512)


def _init(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> dict:
    return model.init(jax.random.key(seed), jnp.zeros(shape, jnp.float32), train=False)


def _init_shapes(model: nn.Module, shape: tuple[int, ...]) -> dict:
    return jax.eval_shape(lambda: _init(model, shape))


def _basic_resnet_params(in_channels, widths, sizes, num_classes, projection: bool) -> int:
    """Parameter count of a CIFAR-stem basic-block ResNet, from the architecture alone:
    conv kernels (no bias), BatchNorm scale + bias, Dense kernel + bias."""

    def conv_bn(c_in, c_out, k):
        return k * k * c_in * c_out + 2 * c_out

    total = conv_bn(in_channels, widths[0], 3)
    c_in = widths[0]
    for width, size in zip(widths, sizes, strict=True):
        for _ in range(size):
            total += conv_bn(c_in, width, 3) + conv_bn(width, width, 3)
            if projection and c_in != width:
                total += conv_bn(c_in, width, 1)
            c_in = width
    return total + c_in * num_classes + num_classes


@pytest.mark.parametrize(
    "name, paper_count, rel_tol, exact",
    [
        # He et al. Table 6: ResNet-20 0.27M, ResNet-56 0.85M (option A shortcuts).
        ("resnet20", 0.27e6, 0.02, _basic_resnet_params(3, (16, 32, 64), (3, 3, 3), 10, False)),
        ("resnet56", 0.85e6, 0.02, _basic_resnet_params(3, (16, 32, 64), (9, 9, 9), 10, False)),
        ("resnet18", 11.17e6, 0.01, _basic_resnet_params(3, IMAGENET_WIDTHS, (2,) * 4, 10, True)),
        (
            "resnet34",
            21.28e6,
            0.01,
            _basic_resnet_params(3, IMAGENET_WIDTHS, (3, 4, 6, 3), 10, True),
        ),
        # The bottleneck count is the well-known CIFAR ResNet-50 figure.
        ("resnet50", 23.5e6, 0.01, 23_520_842),
    ],
)
def test_param_counts_match_architecture_and_published_sizes(name, paper_count, rel_tol, exact):
    variables = _init_shapes(create_model(name, num_classes=10), (1, 32, 32, 3))
    n = count_params(variables["params"])
    assert n == exact
    assert abs(n - paper_count) / paper_count < rel_tol


def test_resnet20_count_is_option_a():
    # 16*16*9*6 + ... : 269,722 without projections; option B would add 2,752.
    variables = _init_shapes(create_model("resnet20", num_classes=10), (1, 32, 32, 3))
    assert count_params(variables["params"]) == 269_722


def test_cnn18_is_resnet18_without_the_projection_shortcuts():
    shape = (1, 32, 32, 3)
    resnet = _init_shapes(create_model("resnet18", num_classes=10), shape)
    cnn = _init_shapes(create_model("cnn18", num_classes=10), shape)
    # Three 1×1 projections (64→128, 128→256, 256→512), each conv kernel + BN scale, bias.
    projections = sum(c * 2 * c + 2 * (2 * c) for c in (64, 128, 256))
    assert projections == 173_824
    assert count_params(resnet["params"]) - count_params(cnn["params"]) == projections
    assert not any("proj" in "/".join(map(str, p)) for p, _ in _flat(cnn["params"]))


def _flat(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (3, 32, 32, 3)])
def test_output_shape_and_dtype(name, shape):
    model = create_model(name, num_classes=10)
    if name in SMALL_MODELS:
        variables = _init(model, shape)
        x = jax.random.normal(jax.random.key(1), shape)
        logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
        assert np.all(np.isfinite(np.asarray(logits)))
    else:
        variables = _init_shapes(model, shape)
        logits = jax.eval_shape(
            lambda v, x: model.apply(v, x, train=False),
            variables,
            jax.ShapeDtypeStruct(shape, jnp.float32),
        )
    assert logits.shape == (shape[0], 10)
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", ["tiny", "resnet18", "resnet50"])
def test_odd_non_square_input(name):
    # Stride-2 stages on odd sizes: the shortcut must round like the SAME-padded conv.
    shape = (2, 29, 41, 2)
    model = create_model(name, num_classes=7)
    variables = _init_shapes(model, shape)
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape), train=False), variables)
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("shape", [(2, 27, 28, 1), (2, 28, 20, 3), (28, 28, 1)])
def test_too_small_or_unbatched_input_is_rejected(shape):
    model = create_model("tiny", num_classes=10)
    with pytest.raises(ValueError, match=r"at least 28.*" + re.escape(str(shape))):
        _init(model, shape)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    shape = (4, 28, 28, 1)
    model32 = create_model("small", num_classes=10)
    model16 = create_model("small", num_classes=10, dtype=jnp.bfloat16)
    variables = _init(model16, shape)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {np.dtype(np.float32)}

    x = jax.random.normal(jax.random.key(1), shape)
    logits16, state = model16.apply(variables, x, train=False, capture_intermediates=True)
    assert logits16.dtype == jnp.float32
    assert state["intermediates"]["conv_init"]["__call__"][0].dtype == jnp.bfloat16
    # Same function, lower precision: close to the float32 logits but not identical.
    logits32 = model32.apply(variables, x, train=False)
    np.testing.assert_allclose(logits16, logits32, atol=0.05 * float(jnp.abs(logits32).max()))
    assert not np.array_equal(np.asarray(logits16), np.asarray(logits32))


def test_hundred_classes():
    shape = (2, 32, 32, 3)
    model = create_model("tiny", num_classes=100)
    variables = _init(model, shape)
    assert variables["params"]["Dense_0"]["kernel"].shape == (16, 100)
    assert model.apply(variables, jnp.ones(shape), train=False).shape == (2, 100)


def test_train_step_updates_batch_stats_with_momentum_0_9():
    shape = (8, 28, 28, 1)
    model = create_model("tiny", num_classes=10)
    variables = _init(model, shape)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), shape)
    _, state = model.apply(
        variables,
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=True,
    )
    stem = state["intermediates"]["conv_init"]["__call__"][0]
    new = state["batch_stats"]["bn_init"]
    np.testing.assert_allclose(new["mean"], 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        new["var"], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    # Every BatchNorm moved, not just the stem's.
    old_leaves = jax.tree_util.tree_leaves(variables["batch_stats"])
    new_leaves = jax.tree_util.tree_leaves(state["batch_stats"])
    assert all(not np.allclose(a, b) for a, b in zip(old_leaves, new_leaves, strict=True))


def test_eval_mode_is_per_example_and_train_mode_uses_the_batch():
    shape = (6, 28, 28, 1)
    model = create_model("tiny", num_classes=10)
    variables = _init(model, shape)
    x = jax.random.normal(jax.random.key(1), shape)
    full = model.apply(variables, x, train=False)
    np.testing.assert_allclose(full[:2], model.apply(variables, x[:2], train=False), atol=1e-5)
    train_full, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    train_part, _ = model.apply(variables, x[:2], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_full[:2], train_part, atol=1e-3)


def test_bad_name_and_class_count():
    with pytest.raises(ValueError, match="resnet20.*resnet50"):
        create_model("resnet19", num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("tiny", num_classes=1)


def test_count_params():
    tree = {"a": jnp.zeros((3, 4)), "b": {"c": jax.ShapeDtypeStruct((5,), jnp.float32)}}
    assert count_params(tree) == 17


def test_cross_replica_batchnorm_matches_the_global_batch():
    """Inside shard_map over 8 devices, axis_name="data" makes every BatchNorm use the
    statistics of the global batch: same logits and batch_stats as one device."""
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    shape = (16, 28, 28, 1)
    # Each device's shard has its own offset, so local statistics differ from global ones.
    offsets = jnp.repeat(jnp.arange(8.0), 2)[:, None, None, None]
    x = jax.random.normal(jax.random.key(1), shape) + offsets
    variables = _init(create_model("tiny", num_classes=10), shape)
    # make_mesh axes are Explicit: the arguments must already carry the in_specs sharding.
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    v_replicated = jax.device_put(variables, NamedSharding(mesh, P()))

    def sharded(model):
        def step(v, x):
            return model.apply(v, x, train=True, mutable=["batch_stats"])

        return jax.jit(
            jax.shard_map(
                step,
                mesh=mesh,
                in_specs=(P(), P("data")),
                out_specs=(P("data"), P()) if model.axis_name else P("data"),
            )
        )

    reference, ref_state = create_model("tiny", num_classes=10).apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    logits, state = sharded(create_model("tiny", num_classes=10, axis_name="data"))(
        v_replicated, x_sharded
    )
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), state, ref_state
    )

    # Without axis_name each device normalises with its own shard: different logits.
    local_logits, _ = sharded(create_model("tiny", num_classes=10))(v_replicated, x_sharded)
    assert not np.allclose(local_logits, reference, atol=1e-2)
