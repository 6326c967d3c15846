"""Listing image inputs: files, directories and glob patterns, in a stable
order, without opening a file. Keras-free and Pillow-free, so the command
line can check its inputs before a backend is chosen.

- A file is taken as given, whatever its ending (the caller named it).
- A directory is walked recursively for files with an image ending
  (`IMAGE_SUFFIXES`, any case): directories in sorted order, the files of each
  sorted, the order of `keras.utils.image_dataset_from_directory`.
- A glob pattern (``*``, ``?``, ``[``; ``**`` for any depth) gives its
  matches in sorted order: files with an image ending, and directories,
  walked as above.
- Inputs keep the order given; a file listed twice (``photos/`` and
  ``photos/*.jpg``) is kept the first time only.

Example:

>>> import os, tempfile
>>> root = tempfile.mkdtemp()
>>> for name in ("b.jpg", "a.PNG", "notes.txt", os.path.join("sub", "c.jpg")):
...     os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
...     open(os.path.join(root, name), "w").close()
>>> [os.path.relpath(p, root) for p in list_images([root, os.path.join(root, "*.jpg")])]
['a.PNG', 'b.jpg', 'sub/c.jpg']
"""

from __future__ import annotations

import glob
import os
from typing import Sequence, Union

#: File endings that directories and glob patterns are searched for: what
#: Pillow reads (`keras.utils.image_dataset_from_directory` takes the first
#: five; TIFF and WebP are common in photo collections).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
#: Characters that make an input a glob pattern rather than a path.
GLOB_CHARACTERS = ("*", "?", "[")


def is_image_name(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> bool:
    """Whether `name` ends with one of `suffixes` (any case).

    Example:

    >>> is_image_name("IMG_0001.JPG"), is_image_name("notes.txt")
    (True, False)
    """
    return name.lower().endswith(tuple(suffixes))


def walk_images(directory, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list:
    """The image files under `directory`, recursively: the sub-directories in
    sorted order, the files of each sorted (symbolic links to directories
    are not followed).
    """
    found = []
    for root, _, names in sorted(os.walk(os.fspath(directory)), key=lambda entry: entry[0]):
        found.extend(os.path.join(root, name) for name in sorted(names) if is_image_name(name, suffixes))
    return found


def _expand(item: str, suffixes: Sequence[str]) -> list:
    if os.path.isfile(item):
        return [item]
    if os.path.isdir(item):
        return walk_images(item, suffixes)
    if any(c in item for c in GLOB_CHARACTERS):
        found = []
        for match in sorted(glob.glob(item, recursive=True)):
            if os.path.isdir(match):
                found.extend(walk_images(match, suffixes))
            elif is_image_name(match, suffixes):
                found.append(match)
        if not found:
            raise ValueError(f"`inputs`: no image file matches {item!r} (endings: {', '.join(suffixes)})")
        return found
    raise ValueError(f"image file not found: {item!r}")


def list_images(inputs: Union[str, os.PathLike, Sequence], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list:
    """The image files of `inputs`, in a stable order, each once.

    Args:
        inputs: a path or a sequence of paths: files (taken as given),
            directories (walked recursively for `suffixes`) and glob patterns.
        suffixes: the endings directories and patterns are searched for.

    Returns:
        The files as strings, in the order of `inputs`, each input's files in
        sorted order; a file reached twice is listed the first time.

    Raises:
        ValueError: an input that is neither a file, a directory nor a
            pattern with a match (the message names it), or no image file
            at all.

    Example:

    >>> list_images("/nonexistent.jpg")
    Traceback (most recent call last):
    ...
    ValueError: image file not found: '/nonexistent.jpg'
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    if not inputs:
        raise ValueError("`inputs`: give at least one image file, directory or glob pattern")
    files, seen = [], set()
    for item in inputs:
        for path in _expand(item, suffixes):
            key = os.path.normcase(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                files.append(path)
    if not files:
        raise ValueError(f"`inputs`: no image files ({', '.join(suffixes)}) in {', '.join(map(repr, inputs))}")
    return files


def class_folders(data, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> tuple:
    """The classes of an image folder and their files, without opening them.

    Args:
        data: a directory with one sub-folder of images per class (searched
            recursively, as `walk_images`).
        suffixes: the image endings.

    Returns:
        ``(class_names, files)``: every sub-folder name, sorted, and a dict
        from each to its image files (possibly empty).

    Raises:
        ValueError: `data` is not a directory.

    Example:

    >>> class_folders("/nonexistent")
    Traceback (most recent call last):
    ...
    ValueError: `data` directory not found: '/nonexistent'
    """
    data = os.fspath(data)
    if not os.path.isdir(data):
        raise ValueError(f"`data` directory not found: {data!r}")
    names = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
    return names, {name: walk_images(os.path.join(data, name), suffixes) for name in names}
