"""Measurements, kept apart from what they measure: ``keras-densenet bench``
(`bench`: its options and measures; `bench_worker`: what each child process
measures: step time, activation memory, build time; `bench_tables`: the
tables), CPU inference per serving runtime (`runtime_bench`, with its child
`runtime_worker`), training throughput (`throughput`), ``predict`` at volume
(`volume`: peak memory over many large photos, images/s against the model
alone), and the native PyTorch DenseNet they compare against
(`torch_densenet`).
"""
