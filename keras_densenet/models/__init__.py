"""The model builders: `DenseNet121` ... `DenseNet264`, `DenseNetBC`, the
generic `DenseNet` and `build` (`densenet`), and ImageNet preprocessing
(`imagenet`).
"""
