"""Child process of tests/test_conv_work.py
(test_counts_jitted_calls_eager_convolutions_and_torch): runs known
convolutions under the counter of tests/conv_work/ (on PYTHONPATH, with
$KD_CONV_WORK and $PYTEST_CURRENT_TEST set by the test), which writes its
tally as JSON under $KD_CONV_WORK. Prints nothing.

Each convolution is 2 images of 8x8x3 to 4 channels, 3x3 window, SAME:
3 calls of a jitted gradient step (forward + 2 gradients each), 1 eager
forward, one jitted function calling a nested jitted convolution twice,
and one PyTorch conv2d.
"""

import jax
import jax.numpy as jnp
import torch


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main():
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    step = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
    for _ in range(3):
        step(x, k)  # 3 calls x (forward + 2 gradients)
    conv(x, k)  # eager: 1 forward
    inner = jax.jit(conv)
    jax.jit(lambda x, k: inner(x, k) + inner(x, k))(x, k)  # one nested function, called twice
    torch.nn.Conv2d(3, 4, 3, padding=1)(torch.ones(2, 3, 8, 8))


if __name__ == "__main__":
    main()
