"""Measurements, kept apart from what they measure: ``keras-densenet bench``
(`bench`: step time, activation memory), CPU inference per serving runtime
(`runtime_bench`), training throughput (`throughput`), and the native
PyTorch DenseNet they compare against (`torch_densenet`).
"""
