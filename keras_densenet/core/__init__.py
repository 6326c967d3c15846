"""Keras-free facts and plumbing every other layer uses: the registry of
variants (`registry`, from `arch` for DenseNets, `fc_arch` for FC-DenseNets
and `pretrained` for the weight sets, as data), argument checks (`checks`),
atomic and durable file writes (`files`), reading HDF5 files of unknown
origin (`hdf5`), backend discovery (`backends`), the job variables of a
multi-process run (`cluster`), optional dependencies (`extras`) and the only
wrappers of private Keras/JAX APIs (`internals`). Nothing here imports keras
at module level.
"""
