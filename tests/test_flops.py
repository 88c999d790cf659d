"""Model FLOPs from the architecture: the counts a GPU's MFU is computed from."""

import jax
import jax.numpy as jnp
import pytest

from mcal_jax import flops, models


def test_resnet18_training_step_is_the_textbook_3_3_gflop_per_image():
    # CIFAR ResNet-18: 0.56 G multiply-adds forward, three passes for a training step.
    count = flops.model_flops_per_image("resnet18", (32, 32, 3), 10)
    assert count == pytest.approx(3.3e9, rel=0.1)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet20", (32, 32, 3)),
        ("resnet18", (32, 32, 3)),
        ("resnet50", (32, 32, 3)),
        ("small", (28, 28, 1)),
        ("cnn18", (28, 28, 1)),
    ],
)
def test_the_traced_forward_pass_matches_a_count_by_hand(name, shape):
    forward = flops.model_flops_per_image(name, shape, 10, training=False)
    assert forward == flops.analytic_resnet_flops(name, shape, 10)


def test_resnet20_training_step_is_three_forwards_less_the_stem_input_gradient():
    analytic = flops.analytic_resnet_flops("resnet20", (32, 32, 3), 10)
    assert analytic == pytest.approx(81.1e6, rel=0.01)  # He et al.'s ResNet-20: ~41M MACs
    stem_input_gradient = 2 * 32 * 32 * 9 * 3 * 16
    training = flops.model_flops_per_image("resnet20", (32, 32, 3), 10)
    assert training == 3 * analytic - stem_input_gradient
    assert training == pytest.approx(3 * analytic, rel=0.1)


def test_a_strided_convolution_and_its_gradients_are_counted_once_each():
    # 8×8×2 → 4×4×3 with a 3×3 kernel, stride 2: 2·(4·4·3)·(9·2) = 1728 FLOPs forward;
    # the input and kernel gradients each cost the same; the input gradient's dilated
    # zeros must not count.
    x = jax.ShapeDtypeStruct((1, 8, 8, 2), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 2, 3), jnp.float32)

    def conv(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ).sum()

    assert flops.function_flops(conv, x, k) == 1728
    assert flops.function_flops(jax.grad(conv, argnums=(0, 1)), x, k) == 3 * 1728


def test_matrix_products_inside_jit_and_scan_are_counted():
    a = jax.ShapeDtypeStruct((4, 5), jnp.float32)
    b = jax.ShapeDtypeStruct((5, 6), jnp.float32)
    assert flops.function_flops(jnp.dot, a, b) == 2 * 4 * 5 * 6
    assert flops.function_flops(jax.jit(jnp.dot), a, b) == 2 * 4 * 5 * 6

    def repeated(a, b):
        return jax.lax.scan(lambda c, _: (c, a @ b), 0.0, length=7)[1]

    assert flops.function_flops(repeated, a, b) == 7 * 2 * 4 * 5 * 6


def test_models_are_counted_for_every_name():
    for name in models.MODEL_NAMES:
        assert flops.model_flops_per_image(name, (28, 28, 1), 10, training=False) > 0
