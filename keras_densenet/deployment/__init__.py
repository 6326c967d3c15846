"""Running trained models outside training:

- `export`: a model to a serving runtime's artifact, checked against the
  Keras model; `writers` writes each format, `quantize` the int8 artifacts
  and their calibration images;
- `runtimes`: the serving runtimes behind one interface;
- `predict`: ``predict`` over image files at volume (streamed, rows to a CSV
  or JSON Lines file as they come);
- `features`: pooled features of image files to a ``.npy`` file, with
  their paths beside it;
- `masks`: segmentation masks.
"""
