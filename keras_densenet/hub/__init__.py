"""keras-hub presets and timm directories, written from this package's models:
`save` (keras-hub presets, through keras-hub's own classes), `timm` (timm
model directories), `convert` (the file-to-file conversions of
``keras-densenet convert``), `anatomy` (what a built model is: its DenseNet,
the preprocessing and head around it) and `parity` (how far keras-hub's
DenseNet is from this package's with the same weights).

Loading presets is the weights layer's job, so that the builders can use it
(``weights=PRESET``): `keras_densenet.weights.presets` reads them, and
`keras_densenet.weights.hub_names` is the explicit layer-name table between
the two packages. Writing needs keras-hub (the ``[hub]`` extra); reading a
local preset directory does not.
"""
