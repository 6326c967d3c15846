"""What the `train` and `segment` commands run: the training configs
(`config`), the trainers (`train`, `segment`), data parallelism across
devices and processes (`distribute`) and JAX's compilation cache
(`compile_cache`).
"""
