"""What the `train` and `segment` commands run.

- `config`: the training options and their checks (keras-free);
- `train`: the classifier trainer, from its parts: `classifier` (the model
  and its compilation), `batches` (the data each process feeds),
  `schedule` (fit phases and learning rates), `backups` (resuming an
  interrupted run), `outputs` (the files of the output directory) and
  `timing` (where the time went);
- `segment`: the FC-DenseNet trainer on the digits canvases;
- `distribute`: data parallelism on Keras' engines, and `multiprocess`:
  jobs of several processes, with `addresses` (where gloo's collectives
  listen) and `watchdog` (seeing a silent process);
- `launch` (starting data parallelism, stopping when a job loses a
  process) and `report` (a command's timings and data warnings): what the
  commands do around a trainer;
- `compile_cache`: JAX's persistent compilation cache.
"""
