"""Tools around the models: checkpoint conversion (`convert`), the paper's
analyses (`analysis`: Table 1 counts, feature reuse), benchmarks (`bench`,
`runtime_bench`: CPU inference per serving runtime,
`throughput`) and the native PyTorch DenseNet they compare against
(`torch_densenet`).
"""
