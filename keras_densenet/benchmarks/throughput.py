"""Throughput benchmark: ours vs keras.applications vs native PyTorch, one process.

`measure` runs on the current Keras backend and times, in alternating rounds
(every candidate once per round, so load changes hit all alike), images per
second of

* inference: ``model.predict_on_batch`` (native: ``torch.inference_mode``);
* training: ``model.train_on_batch`` with SGD + momentum (native: one
  ``backward`` and ``optimizer.step``),

for this package's model (``ours``; on torch also ``ours_channels_first``,
and ``ours_memory_efficient`` in training), keras.applications' DenseNet of
the same variant (``keras_applications``, when it has one) and a native
PyTorch DenseNet (``native``: torchvision's when it imports, else
`keras_densenet.benchmarks.torch_densenet`; ``native_memory_efficient`` in training;
``native_channels_last`` on CUDA), whenever torch is installed. The batch is
already on the device. Peak training memory beyond weights and optimizer
state, per image, where the backend can tell: ``torch.cuda.max_memory_allocated``
(torch backend and native on CUDA), XLA's temporary buffers of the compiled
training step (``memory_analysis()``, JAX, any device) and
``tf.config.experimental.get_memory_info`` (TensorFlow on GPU).

`keras_densenet.benchmarks.bench` runs it in a fresh process per backend
(``keras-densenet bench throughput``).

Example::

    # KERAS_BACKEND=jax
    from keras_densenet.benchmarks import throughput
    result = throughput.measure("densenet121", image_size=64, batch_size=8, rounds=3)
    result["training"]["ours"]["images_per_s"]
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import keras
import numpy as np

from keras_densenet.core import backends, registry
from keras_densenet.core.registry import ArchConfig
from keras_densenet.models import densenet
from keras_densenet.training import config

MODES = ("inference", "training")
PRECISIONS = config.DTYPE_POLICIES
MB = 1e6
#: Calls of each candidate before timing (compilation, caches, optimizer state).
WARMUP_CALLS = 3
#: keras.applications' DenseNets, by our variant name.
KERAS_APPLICATIONS = registry.KERAS_APPLICATIONS
LEARNING_RATE = 0.01
MOMENTUM = 0.9
#: How each backend's training memory is measured (`measure`'s ``memory_method``).
MEMORY_METHODS = {
    "jax": "XLA temporary buffers of the compiled training step (memory_analysis)",
    "torch": "torch.cuda.max_memory_allocated during one step minus memory allocated before it (CUDA only)",
    "tensorflow": "tf.config.experimental.get_memory_info peak minus current (GPU only)",
}
NATIVE_MEMORY_METHOD = "native: torch.cuda.max_memory_allocated (CUDA only)"


def _torch():
    """torch, or None when it is not installed (native candidates skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cuda(torch) -> bool:
    return torch is not None and torch.cuda.is_available()


def machine() -> dict:
    """Where the numbers come from: CPU, accelerator, library versions.

    Example::

        throughput.machine()["avx512"]  # True, False, or None off Linux
    """
    info = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        **backends.cpu_info(),
    }
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        info["jax"] = jax.__version__
        info["device"] = str(jax.devices()[0].device_kind)
        info["platform"] = jax.devices()[0].platform
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        info["platform"] = "gpu" if gpus else "cpu"
        info["device"] = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    torch = _torch()
    if torch is not None:
        info["torch"] = torch.__version__
        if backend == "torch":
            info["platform"] = "gpu" if _cuda(torch) else "cpu"
            info["device"] = torch.cuda.get_device_name(0) if _cuda(torch) else "cpu"
    return info


def _on_device(array: np.ndarray):
    """`array` as a tensor on the backend's default device (no per-call copy)."""
    backend = keras.backend.backend()
    if backend == "torch":
        torch = _torch()
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t.cuda() if _cuda(torch) else t
    if backend == "jax":
        import jax

        return jax.device_put(array)
    return keras.ops.convert_to_tensor(array)


def _sync() -> None:
    torch = _torch()
    if _cuda(torch):
        torch.cuda.synchronize()


def timed_rounds(candidates: Dict[str, Callable[[], object]], rounds: int, iters: int, batch_size: int) -> dict:
    """Images/s of each candidate: median, min, max and every round.

    Each round runs every candidate `iters` times in turn. Candidates that
    fail their warm-up are dropped and reported under ``"skipped"``.
    """
    skipped = {}
    for name, fn in list(candidates.items()):
        try:
            for _ in range(WARMUP_CALLS):
                fn()
            _sync()
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            skipped[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            del candidates[name]
    rates = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            _sync()
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            _sync()
            rates[name].append(iters * batch_size / (time.perf_counter() - start))
    result = {
        name: {"images_per_s": statistics.median(r), "min": min(r), "max": max(r), "rounds": r}
        for name, r in rates.items()
    }
    if skipped:
        result["skipped"] = skipped
    return result


def _arch(variant) -> ArchConfig:
    return variant if isinstance(variant, ArchConfig) else registry.get_variant(variant).arch


def _ours(variant, **kwargs):
    """A registered variant by name, or any `ArchConfig`, 1000 classes."""
    if isinstance(variant, ArchConfig):
        a = variant
        return densenet.DenseNet(a.blocks, a.growth_rate, bottleneck=a.bottleneck, bn_size=a.bn_size,
                           compression=a.compression, num_init_features=a.num_init_features,
                           stem=a.stem, classes=1000, **kwargs)
    return densenet.build(variant, classes=1000, **kwargs)


def _keras_models(variant, image_size: int, precision: str, training: bool) -> dict:
    """name -> (model, uses channels_first input)."""
    keras.config.set_dtype_policy(precision)
    try:
        shape = (image_size, image_size, 3)
        models = {"ours": (_ours(variant, input_shape=shape), False)}
        if keras.backend.backend() == "torch":
            # PyTorch's native layout: no transposes around each conv.
            cf = _ours(variant, input_shape=(3, image_size, image_size), data_format="channels_first")
            models["ours_channels_first"] = (cf, True)
            # PyTorch's fused BatchNormalization kernel (keras_densenet.layers.fused).
            models["ours_fused_bn"] = (_ours(variant, input_shape=shape, fused_bn=True), False)
            models["ours_channels_first_fused_bn"] = (
                _ours(variant, input_shape=(3, image_size, image_size), data_format="channels_first", fused_bn=True),
                True,
            )
        if training:
            models["ours_memory_efficient"] = (_ours(variant, input_shape=shape, memory_efficient=True), False)
            if keras.backend.backend() == "torch":
                models["ours_memory_efficient_fused_bn"] = (
                    _ours(variant, input_shape=shape, memory_efficient=True, fused_bn=True), False)
        if isinstance(variant, str) and variant in KERAS_APPLICATIONS:
            builder = getattr(keras.applications, KERAS_APPLICATIONS[variant])
            models["keras_applications"] = (builder(weights=None, input_shape=shape), False)
    finally:
        keras.config.set_dtype_policy("float32")
    if training:
        for model, _ in models.values():
            model.compile(
                optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                loss=keras.losses.SparseCategoricalCrossentropy(),
            )
    return models


def _native_models(variant, training: bool) -> dict:
    """name -> (torch module, channels_last memory format, source)."""
    torch = _torch()
    if torch is None:
        return {}
    from keras_densenet.benchmarks.torch_densenet import native_densenet

    arch = _arch(variant)
    if arch.stem != "imagenet" or not arch.bottleneck or arch.compression != 0.5:
        return {}  # torchvision's DenseNet is the ImageNet DenseNet-BC family
    kinds = [("native", False, False)]
    if _cuda(torch):
        kinds.append(("native_channels_last", False, True))
    if training:
        kinds.append(("native_memory_efficient", True, False))
    out = {}
    for name, memory_efficient, channels_last in kinds:
        module, source = native_densenet(
            arch.blocks, arch.growth_rate, arch.num_init_features, arch.bn_size,
            memory_efficient=memory_efficient,
        )
        if _cuda(torch):
            module = module.cuda()
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        out[name] = (module.train(training), channels_last, source)
    return out


def _native_input(x: np.ndarray, channels_last: bool):
    torch = _torch()
    t = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    t = t.cuda() if _cuda(torch) else t
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _autocast(precision: str):
    torch = _torch()
    dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    device = "cuda" if _cuda(torch) else "cpu"
    return torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None)


def _native_step(module, x, y, precision: str, training: bool) -> Callable[[], float]:
    torch = _torch()
    if not training:
        def infer():
            with torch.inference_mode(), _autocast(precision):
                return module(x).float().cpu()
        return infer
    optimizer = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(precision):
            out = module(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    return step


def _torch_step_memory(step: Callable[[], object]) -> Optional[float]:
    """Peak CUDA bytes of one step beyond what is allocated before it."""
    torch = _torch()
    if not _cuda(torch):
        return None
    step()  # optimizer state exists after this
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - base)


def _tf_step_memory(step: Callable[[], object]) -> Optional[float]:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    step()
    base = tf.config.experimental.get_memory_info("GPU:0")["current"]
    tf.config.experimental.reset_memory_stats("GPU:0")
    step()
    return float(tf.config.experimental.get_memory_info("GPU:0")["peak"] - base)


def jax_step_temp_bytes(model, x, y) -> float:
    """XLA's temporary buffers of one compiled SGD training step (JAX).

    The step is ``value_and_grad`` of the cross-entropy through
    ``model.stateless_call`` plus the weight update, jitted and compiled for
    `x`; ``memory_analysis().temp_size_in_bytes`` excludes the arguments
    (weights, optimizer-free state, the batch) and outputs.
    """
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(tv, ntv, x, y):
        out, ntv = model.stateless_call(tv, ntv, x, training=True)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, out)), ntv

    def step(tv, ntv, x, y):
        (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x, y)
        return loss, jax.tree.map(lambda w, g: w - LEARNING_RATE * g, tv, grads), ntv

    compiled = jax.jit(step).lower(trainable, non_trainable, x, y).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return float("nan")
    return float(analysis.temp_size_in_bytes)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """`measure`'s arguments, shared by every mode."""

    variant: object
    image_size: int
    batch_size: int
    rounds: int
    iters: int
    precision: str
    native: bool
    memory: bool
    seed: int


def _keras_candidates(keras_models: dict, x_dev, x_cf, y_dev, training: bool) -> dict:
    """name -> one call of each Keras model on the batch already on the device."""
    candidates = {}
    for name, (model, channels_first) in keras_models.items():
        xin = x_cf if channels_first else x_dev
        if training:
            candidates[name] = lambda m=model, xin=xin: float(m.train_on_batch(xin, y_dev))
        else:
            candidates[name] = lambda m=model, xin=xin: m.predict_on_batch(xin)
    return candidates


def _native_candidates(natives: dict, x: np.ndarray, labels: np.ndarray, precision: str, training: bool) -> dict:
    """name -> one step of each native PyTorch module (`_native_models`)."""
    if not natives:
        return {}
    torch = _torch()
    y = torch.from_numpy(labels.astype("int64"))
    y = y.cuda() if _cuda(torch) else y
    return {
        name: _native_step(module, _native_input(x, channels_last), y, precision, training)
        for name, (module, channels_last, _) in natives.items()
    }


def _ratios(timings: dict) -> dict:
    """Images/s of every timed candidate over ``ours`` (empty without ``ours``)."""
    ours = timings.get("ours", {}).get("images_per_s")
    return {name: r["images_per_s"] / ours for name, r in timings.items() if name != "skipped" and ours}


def _training_memory(timings: dict, keras_models: dict, natives: dict, candidates: dict, x_dev, y_dev) -> dict:
    """Peak training bytes of every timed candidate, by the backend's method."""
    backend = keras.backend.backend()
    memory_bytes: Dict[str, Optional[float]] = {}
    for name, (model, _) in keras_models.items():
        if name not in timings:
            continue  # skipped: it failed its warm-up
        if backend == "jax":
            memory_bytes[name] = jax_step_temp_bytes(model, x_dev, y_dev)
        elif backend == "torch":
            memory_bytes[name] = _torch_step_memory(candidates[name])
        else:
            memory_bytes[name] = _tf_step_memory(candidates[name])
    for name in natives:
        if name in timings:
            memory_bytes[name] = _torch_step_memory(candidates[name])
    return memory_bytes


def _measure_mode(setup: _Setup, mode: str, x: np.ndarray, labels: np.ndarray) -> dict:
    """One mode's timings (and training memory): ``{"timings", "memory",
    "native_source"}``. The models live only as long as this call."""
    training = mode == "training"
    backend = keras.backend.backend()
    keras.utils.set_random_seed(setup.seed)
    x_dev = _on_device(x)
    x_cf = _on_device(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))) if backend == "torch" else None
    y_dev = _on_device(labels.astype("int64" if backend == "torch" else "int32"))
    keras_models = _keras_models(setup.variant, setup.image_size, setup.precision, training)
    candidates = _keras_candidates(keras_models, x_dev, x_cf, y_dev, training)
    natives = _native_models(setup.variant, training) if setup.native else {}
    candidates.update(_native_candidates(natives, x, labels, setup.precision, training))
    timings = timed_rounds(candidates, setup.rounds, setup.iters, setup.batch_size)
    memory_bytes = {}
    if training and setup.memory:
        memory_bytes = _training_memory(timings, keras_models, natives, candidates, x_dev, y_dev)
    native_source = next(iter(natives.values()))[2] if natives else None
    return {"timings": timings, "memory": memory_bytes, "native_source": native_source}


def measure(
    variant="densenet121",
    *,
    image_size: int = 224,
    batch_size: int = 64,
    rounds: int = 7,
    iters: int = 5,
    modes: Sequence[str] = MODES,
    precision: str = "float32",
    native: bool = True,
    memory: bool = True,
    seed: int = 0,
) -> dict:
    """Throughput (and training memory) of every candidate on this backend.

    Args:
        variant: a registered variant name (keras.applications is compared
            for densenet121/169/201) or an `ArchConfig`.
        image_size: input side.
        batch_size: images per call.
        rounds: timed rounds (the spread is over rounds).
        iters: calls per candidate per round.
        modes: ``"inference"`` and/or ``"training"``.
        precision: Keras dtype policy of the Keras models (native models use
            ``torch.autocast`` for the mixed policies).
        native: include the native PyTorch DenseNet when torch imports.
        memory: measure training memory where the backend can report it.
        seed: seed of the random batch and of the Keras weights.

    Returns:
        ``{"machine": ..., "config": ..., "inference": {name: {"images_per_s",
        "min", "max", "rounds"}}, "training": {...}, "ratios": {mode: {name:
        images_per_s / ours}}, "memory_mb_per_image": {name: MB or None},
        "memory_method": ..., "native_source": ...}``.
    """
    setup = _Setup(variant, image_size, batch_size, rounds, iters, precision, native, memory, seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 1000, (batch_size,))
    result = {
        "machine": machine(),
        "config": dict(variant=variant if isinstance(variant, str) else repr(variant), image_size=image_size,
                       batch_size=batch_size, rounds=rounds, iters=iters, precision=precision, modes=list(modes)),
        "ratios": {},
    }
    memory_bytes: Dict[str, Optional[float]] = {}
    for mode in modes:
        run = _measure_mode(setup, mode, x, labels)
        if run["native_source"] is not None:
            result["native_source"] = run["native_source"]
        result[mode] = run["timings"]
        result["ratios"][mode] = _ratios(run["timings"])
        memory_bytes.update(run["memory"])
    result["memory_mb_per_image"] = {
        k: (v / MB / batch_size if v is not None else None) for k, v in memory_bytes.items()
    }
    result["memory_method"] = f"{MEMORY_METHODS[keras.backend.backend()]}; {NATIVE_MEMORY_METHOD}"
    return result
