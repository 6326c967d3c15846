"""What the `train`, `predict` and `export` commands run: the training config
(`config`), datasets (`data`), the trainer (`train`), data parallelism
(`distribute`), prediction and export (`deploy`) and JAX's compilation
cache (`compile_cache`).
"""
