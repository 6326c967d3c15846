"""One SGD step through fit, in a 2-process JAX job or in one process on as many
devices (tests/test_multiprocess.py). Arguments: DEVICES OUT.npz; the job comes
from Keras' variables, if set. The writer saves the weights and prints the losses."""

import json
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")

import keras  # noqa: E402

from keras_densenet.core import cluster  # noqa: E402
from keras_densenet.models import densenet  # noqa: E402
from keras_densenet.training import distribute, multiprocess  # noqa: E402

devices, out = int(sys.argv[1]), sys.argv[2]
job = cluster.job_from_environment()
if job is not None:
    multiprocess.initialize_job(job, connect_timeout_s=120, cpu_devices=devices)
else:
    multiprocess.set_cpu_devices(devices)
plan = distribute.data_parallel()
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (16, 16, 16, 3)).astype("float32")
x += np.repeat(np.arange(8, dtype="float32"), 2)[:, None, None, None]  # slices differ
y = rng.integers(0, 3, 16)

def step(order):
    # one SGD step through fit on this process's slice of the (reordered) global batch
    xs, ys = x[order], y[order]
    n, p = plan.num_processes, plan.process_id
    share = slice(p * 16 // n, (p + 1) * 16 // n)
    with plan.scope():
        keras.utils.set_random_seed(0)
        model = densenet.DenseNet((2, 2), growth_rate=4, input_shape=(16, 16, 3), classes=3, bn_momentum=0.5)
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        loss = model.fit(xs[share], ys[share], batch_size=16 // n, epochs=1, shuffle=False, verbose=0)
    return float(loss.history["loss"][0]), [np.asarray(w) for w in model.get_weights()]

results = {"same": step(np.arange(16))}
if plan.num_processes == 1:
    results["reordered"] = step(rng.permutation(16))
if plan.is_writer:
    np.savez(out, **{f"{k}_{i}": w for k, (_, ws) in results.items() for i, w in enumerate(ws)})
    print(json.dumps(dict(devices=plan.num_devices, processes=plan.num_processes,
                          **{f"loss_{k}": v[0] for k, v in results.items()})))
