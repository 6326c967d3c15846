"""The data the commands read: the bundled digits and image folders
(`datasets`), and the digit canvases for segmentation (`canvases`).
Keras-free at import; TensorFlow only where a folder pipeline needs it.
"""
