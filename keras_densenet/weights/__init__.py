"""Pretrained weights: reading PyTorch/safetensors state dicts and the one
Keras-PyTorch layer-name table (`checkpoints`), and resolving, downloading,
verifying and loading weight sets into built models (`loading`).
"""
