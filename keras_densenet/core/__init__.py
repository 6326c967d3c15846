"""Keras-free facts and plumbing every other layer uses: the registry of
variants (`registry`), argument checks (`checks`), atomic file writes
(`files`), backend discovery (`backends`), the job variables of a
multi-process run (`cluster`), optional dependencies (`extras`) and the only
wrappers of private Keras/JAX APIs (`internals`). Nothing here imports keras
at module level.
"""
