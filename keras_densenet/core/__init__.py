"""Keras-free facts and plumbing every other layer uses: the registry of
variants (`registry`), argument checks (`checks`), atomic file writes
(`files`), backend discovery (`backends`) and the only wrappers of private
Keras/JAX APIs (`internals`). Nothing here imports keras at module level.
"""
