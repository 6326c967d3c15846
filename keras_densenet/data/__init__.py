"""The data the commands read: the bundled digits (`datasets`); image files
through one streaming pipeline on every backend (`images`, with `listing`
for the inputs, `folders` for training folders and `progress` for what is
printed meanwhile); the older tf.data folder pipelines (`tfdata`); and the
digit canvases for segmentation (`canvases`). Keras-free at import;
TensorFlow only for `tfdata`.
"""
