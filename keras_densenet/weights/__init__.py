"""Pretrained weights: reading PyTorch/safetensors state dicts and the one
Keras-PyTorch layer-name table (`checkpoints`), resolving, downloading,
verifying and loading weight sets into built models (`loading`), and
reading keras-hub presets (`presets`, with keras-hub's layer names in
`hub_names`).
"""
