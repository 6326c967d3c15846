"""A one-process JAX job (tests/test_internals.py), in a child process because the
test process must not join one: the coordination service's client and its
key-value store, the CPU backend from our factory with gloo on the address
given, Keras' seed step. Argument: a free loopback port."""

import sys

import jax

try:
    from jax._src.lib import _jax
except ImportError:  # JAX before 0.6: the same functions in xla_extension
    from jax._src.lib import xla_extension as _jax

from keras_densenet.core import internals

assert internals.distributed_client() is None
calls = []
real = _jax.make_gloo_tcp_collectives
_jax.make_gloo_tcp_collectives = lambda **kwargs: calls.append(kwargs) or real(**kwargs)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
told = internals.use_gloo_address(hostname="127.0.0.1")
jax.distributed.initialize("127.0.0.1:" + sys.argv[1], 1, 0)
client = internals.distributed_client()
client.key_value_set("kd/alive/0", "1", allow_overwrite=True)
client.key_value_set("kd/alive/0", "2", allow_overwrite=True)
assert client.key_value_dir_get("kd/alive/") == [("kd/alive/0", "2")]
assert jax.devices()[0].platform == "cpu"
# An older JAX makes gloo without a hostname (ours was not told): none of ours then.
assert [c["hostname"] for c in calls if c.get("hostname")] == (["127.0.0.1"] if told else []), calls
import keras  # noqa: E402, F401  (Keras' RNG after the job formed)
from keras.src.utils import rng_utils  # noqa: E402

ran = internals.initialize_keras_rng()
if hasattr(rng_utils, "get_random_seed"):  # Keras >= 3.10; before, there is no seed to read back
    assert (rng_utils.get_random_seed() is not None) == ran
print("ok", told, ran)
