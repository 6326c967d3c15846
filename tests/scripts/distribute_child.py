"""Child process of tests/test_distribute.py: one data-parallel check on
virtual CPU devices, whose count is fixed when JAX or TensorFlow starts.

Usage: ``python distribute_child.py CASE DEVICES [OUTPUT_DIR]``, with
$KERAS_BACKEND set by the test (and, on JAX, ``XLA_FLAGS=
--xla_force_host_platform_device_count=DEVICES``). Prints one JSON object,
as its last line, that the test checks. Cases (the test that runs each):

- ``jax_step`` (test_jax_step_on_8_devices_equals_one_device_and_shards_the_batch):
  one SGD step on DEVICES devices against one device; how the batch was sharded.
- ``jax_cli`` (test_jax_cli_distribute_shards_every_batch): ``train
  --distribute`` into OUTPUT_DIR; the shapes and shardings of the batches fed.
- ``tf_batch_norm`` (test_tf_batch_norm_is_per_replica_unless_synchronized):
  the step per replica and with synchronized BatchNormalization.
- ``tf_train_sync_bn`` (test_tf_train_distribute_sync_bn_splits_batches_and_saves_portable_bn):
  `train` with ``distribute`` and ``sync_bn`` into OUTPUT_DIR.
"""

import contextlib
import io
import json
import os
import sys


def configure(devices: int) -> None:
    """Before the backend starts: DEVICES logical CPUs on TensorFlow (JAX
    reads XLA_FLAGS), and full float32 matmuls, as the suite has."""
    if os.environ["KERAS_BACKEND"] == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    else:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
        tf.config.experimental.enable_tensor_float_32_execution(False)


def build(memory_efficient=False):
    """A tiny DenseNet, the same weights for every call."""
    import keras

    from keras_densenet.models import densenet

    keras.utils.set_random_seed(0)
    return densenet.DenseNet((2, 2), growth_rate=4, input_shape=(16, 16, 3), classes=3,
                             bn_momentum=0.5, memory_efficient=memory_efficient)


def step(model, x, y):
    """One SGD step through model.fit, the path that distributes the batch
    (TensorFlow's train_on_batch would feed every replica the whole batch)."""
    import keras

    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return float(history.history["loss"][0]), model.get_weights()


def max_diff(a, b):
    import numpy as np

    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


def reference_step():
    """16 images whose shards differ, and the one-device step on them."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 16, 16, 3)).astype("float32")
    x += np.repeat(np.arange(8, dtype="float32"), 2)[:, None, None, None]  # shards differ
    y = rng.integers(0, 3, 16)
    reference = build()
    initial = reference.get_weights()
    moving = [("moving" in w.path) for w in reference.weights]
    loss_1, weights_1 = step(reference, x, y)
    return dict(x=x, y=y, initial=initial, moving=moving, loss_1=loss_1, weights_1=weights_1)


def jax_step(devices, output):
    import jax
    import keras

    from keras_densenet.training import distribute

    ref = reference_step()
    x, y, initial, weights_1 = ref["x"], ref["y"], ref["initial"], ref["weights_1"]
    seen = []

    class Probe(keras.layers.Layer):
        # Records the sharding of the batch inside the jitted train step.
        def call(self, inputs):
            jax.debug.inspect_array_sharding(inputs, callback=seen.append)
            return inputs

    plan = distribute.data_parallel()
    with plan.scope():
        model = build()
        model.set_weights(initial)
        wrapped = keras.Sequential([keras.Input((16, 16, 3)), Probe(), model])
        loss_n, _ = step(wrapped, x, y)
        weights_n = model.get_weights()
        # memory_efficient=True under the same distribution
        efficient = build(memory_efficient=True)
        efficient.set_weights(initial)
        loss_me, weights_me = step(efficient, x, y)
    return dict(
        devices=plan.num_devices, engine=plan.engine, bn=plan.bn_statistics,
        loss_1=ref["loss_1"], loss_8=loss_n, diff_8=max_diff(weights_1, weights_n),
        loss_me=loss_me, diff_me=max_diff(weights_1, weights_me),
        moved=max_diff(initial, weights_n),
        batch_devices=seen[0].num_devices, shard_shape=list(seen[0].shard_shape(x.shape)),
        weight_devices=model.weights[0].value.sharding.num_devices,
    )


def jax_cli(devices, output):
    import keras
    from keras.src.backend.jax import distribution_lib

    from keras_densenet import cli

    shapes = []
    original = distribution_lib.distribute_data_input

    def record(per_process_batch, layout, batch_dim_name):
        # What the trainer feeds the train step, as placed on the devices.
        array = original(per_process_batch, layout, batch_dim_name)
        shapes.append([list(array.shape), array.sharding.num_devices,
                       list(array.sharding.shard_shape(array.shape))])
        return array

    distribution_lib.distribute_data_input = record
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["train", "--distribute", "--depth", "10", "--growth-rate", "4",
                         "--limit", "60", "--epochs", "1", "--batch-size", "4", "--output", output])
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    return dict(code=code, stdout=stdout.getvalue(), shapes=shapes,
                weight_devices=model.weights[0].value.sharding.num_devices)


def tf_batch_norm(devices, output):
    from keras_densenet.training import distribute

    ref = reference_step()
    x, y, initial, moving, weights_1 = ref["x"], ref["y"], ref["initial"], ref["moving"], ref["weights_1"]
    shard = build()
    shard.set_weights(initial)
    _, weights_shard = step(shard, x[:8], y[:8])  # replica 0's half on one device
    results = {}
    for memory_efficient in (False, True):
        for sync_bn in (False, True):
            plan = distribute.data_parallel(sync_bn=sync_bn)
            with plan.scope():
                model = plan.prepare(build(memory_efficient))
                model.set_weights(initial)
                loss, weights = step(model, x, y)
            stats = [w for w, m in zip(weights, moving, strict=True) if m]
            results[f"{memory_efficient}_{sync_bn}"] = dict(
                loss=loss, diff_1=max_diff(weights_1, weights),
                stats_vs_shard=max_diff([w for w, m in zip(weights_shard, moving, strict=True) if m], stats),
                stats_vs_1=max_diff([w for w, m in zip(weights_1, moving, strict=True) if m], stats),
            )
    return dict(devices=plan.num_devices, engine=plan.engine, loss_1=ref["loss_1"], results=results)


def tf_train_sync_bn(devices, output):
    import keras
    import tensorflow as tf

    from keras_densenet.training import distribute
    from keras_densenet.training.train import TrainConfig, train

    replicas = []
    original = tf.distribute.MirroredStrategy.experimental_distribute_dataset

    def record(self, dataset, *args, **kwargs):
        distributed = original(self, dataset, *args, **kwargs)
        replicas.append(len(distributed.element_spec[0]._value_specs))  # per-replica inputs
        return distributed

    tf.distribute.MirroredStrategy.experimental_distribute_dataset = record

    class Watch(keras.callbacks.Callback):
        synchronized, in_sync = [], []

        def on_train_batch_end(self, batch, logs=None):
            layers = distribute.batch_norm_layers(self.model)
            Watch.synchronized.append(all(layer.synchronized for layer in layers))
            Watch.in_sync.append(self.model.distribute_strategy.num_replicas_in_sync)

    result = train(TrainConfig(depth=10, growth_rate=4, limit=60, batch_size=4, epochs=1, lr=2e-3,
                               verbose=0, output=output, distribute=True,
                               sync_bn=True, memory_efficient=True), callbacks=[Watch()])
    with open(result.log_path) as f:
        log = f.read()
    config = json.dumps(keras.saving.load_model(result.model_path).get_config())
    return dict(num_devices=result.num_devices, replicas=replicas,
                synchronized=Watch.synchronized, in_sync=Watch.in_sync, log=log,
                saved_sync=config.count('"synchronized": true'),
                saved_unsync=config.count('"synchronized": false'))


CASES = {f.__name__: f for f in (jax_step, jax_cli, tf_batch_norm, tf_train_sync_bn)}


def main(argv):
    case, devices = argv[0], int(argv[1])
    output = argv[2] if len(argv) > 2 else None
    configure(devices)
    print(json.dumps(CASES[case](devices, output)))


if __name__ == "__main__":
    main(sys.argv[1:])
