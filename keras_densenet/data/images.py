"""Reading image files at volume: one streaming pipeline for ``train --data``,
``predict`` and feature extraction, on every backend, without TensorFlow.

Files are listed (`keras_densenet.data.listing`), then decoded, resized and
batched lazily, a batch at a time, so memory is bounded by the batch and the
queue of batches read ahead, not by the number of files or their resolution:

- **Decoding** is Pillow's. A JPEG much larger than the target size is
  decoded at 1/2, 1/4 or 1/8 of its size (`PIL.Image.Image.draft`, libjpeg's
  DCT scaling, still at least the target size): a 4000x3000 photo for a
  224x224 model is decoded at 500x375, 4x faster and 64x smaller. Modes are
  converted as Keras' `load_img` does (CMYK, palette, alpha to RGB; anything
  to L for grayscale models), except 16-bit grayscale, which is scaled to
  [0, 255] (Pillow's own conversion clips it to 255). EXIF orientation is
  not applied (nor is it by `image_dataset_from_directory`).
- **Resizing** is `resize`: bilinear without antialiasing, half-pixel
  centres, in NumPy, the arithmetic of `keras.ops.image.resize` and of the
  `Resizing` layer inside trained models (`datasets.RESIZE_INTERPOLATION`),
  so the pixels equal those of ``keras_densenet.data.datasets.resize_images``
  within float rounding on every backend.
- **Batches** come from `ImageFiles.batch` (Keras-free) and, for
  ``model.fit`` / ``model.predict``, from `image_batches`, a
  `keras.utils.PyDataset` whose worker threads decode the next batches while
  the model runs (Pillow and NumPy release the GIL). `prefetch` does the
  same for loops that call the model themselves (``predict`` with a row
  writer, serving artifacts, features): a batch at a time through a thread
  pool, at most `max_queue_size` batches ahead.

**Unreadable files** (empty, not an image, truncated) either raise a
`ValueError` naming the file (``on_error="raise"``) or are skipped
(``on_error="skip"``): one line on stderr names the file and the reason, the
file gives no element, its batch is shorter, and `ImageFiles.skipped` lists
it. Which files a batch kept is `ImageFiles.batch_paths`, so outputs stay
aligned with their files.

Example:

>>> import numpy as np
>>> resize(np.arange(4, dtype="float32").reshape(1, 4, 1), (1, 2))[..., 0]
array([[0.5, 2.5]], dtype=float32)
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import sys
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from keras_densenet.core import checks, extras

#: What `on_error` may be.
ON_ERROR = ("raise", "skip")
#: Decoding threads by default: one per core, at most 4. A batch decodes in
#: a fraction of the model's time on it (docs/performance.md), so a few
#: threads keep ahead of the model without taking its cores.
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: Batches read ahead by default (decoded or being decoded): enough to keep
#: every default worker busy while the model runs.
DEFAULT_QUEUE = DEFAULT_WORKERS + 1


def image_size_pair(image_size, name: str = "image_size") -> Optional[tuple]:
    """``(height, width)`` from an int, a pair or ``None`` (own size).

    Example:

    >>> image_size_pair(224), image_size_pair((96, 128)), image_size_pair(None)
    ((224, 224), (96, 128), None)
    """
    if image_size is None:
        return None
    if checks.is_integer(image_size):
        image_size = (image_size, image_size)
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"`{name}` must be an int, a (height, width) pair or None. Received: {image_size!r}")
    return tuple(checks.integer(name, s, minimum=1) for s in image_size)


def check_on_error(on_error: str) -> str:
    """`on_error` if it is one of `ON_ERROR`, else a ValueError naming it."""
    return checks.one_of("on_error", on_error, ON_ERROR)


def _axis(n_in: int, n_out: int) -> tuple:
    """Source indices and weights of a half-pixel bilinear resize along one
    axis; positions outside the image take the edge pixel (as TF, JAX and
    torch do without antialiasing)."""
    pos = np.clip((np.arange(n_out, dtype="float64") + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(pos).astype("intp")
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (pos - low).astype("float32")


def resize(image: np.ndarray, size) -> np.ndarray:
    """Resizes one ``(height, width, channels)`` image bilinearly, as
    `keras.ops.image.resize` (``antialias=False``) and the `Resizing` layer.

    Rows first, then columns, gathering two source rows per output row, so
    a full-resolution source is never copied whole into float32.

    Args:
        image: uint8 or float array, channels last.
        size: ``(height, width)`` or an int.

    Returns:
        A float32 array of the new size (the same values when the size is
        unchanged).
    """
    height, width = image_size_pair(size, "size")
    if image.shape[:2] == (height, width):
        return image.astype("float32", copy=False)
    low, high, t = _axis(image.shape[0], height)
    rows = np.take(image, low, axis=0).astype("float32")  # np.take: faster than fancy indexing
    rows += (np.take(image, high, axis=0) - rows) * t[:, None, None]
    low, high, t = _axis(image.shape[1], width)
    out = np.take(rows, low, axis=1)
    out += (np.take(rows, high, axis=1) - out) * t[None, :, None]
    return out


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; the message names it and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path!r}: {reason}")
        self.path, self.reason = path, reason


def _reason(path: str, error: Exception) -> str:
    Image = sys.modules.get("PIL.Image")
    if Image is not None and isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(error, OSError) and "truncated" in str(error):
        return "truncated image data"
    return f"{type(error).__name__}: {error}".replace(repr(path), "the file")


def _pixels(img, channels: int) -> np.ndarray:
    """The decoded Pillow image as an ``(h, w, channels)`` uint8 array, or
    float32 for 16-bit grayscale scaled to [0, 255]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = np.clip(np.asarray(img, dtype="float32"), 0, 65535) * (255.0 / 65535.0)
        return np.repeat(gray[..., None], channels, axis=-1)
    # Keras' load_img: anything else to RGB (CMYK, palette, alpha: Pillow's
    # conversions) or to L.
    mode = "RGB" if channels == 3 else "L"
    if img.mode != mode:
        img = img.convert(mode)
    array = np.asarray(img)
    return array if array.ndim == 3 else array[..., None]


def check_pixels(img, path: str) -> None:
    """Refuses an opened Pillow image that declares more pixels than
    Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default; raise it
    to read larger images, ``None`` turns the check off), counted after
    `draft`, before anything is decoded: a decompression bomb (a small file
    declaring 12000x12000) would otherwise take GBs. Pillow itself only
    warns up to twice that bound.

    Raises:
        UnreadableImageError: naming the file and its declared size.
    """
    limit = sys.modules["PIL.Image"].MAX_IMAGE_PIXELS
    width, height = img.size
    if limit is not None and width * height > limit:
        raise UnreadableImageError(path, f"it declares {width}x{height} = {width * height:,} pixels, more than "
                                         f"PIL.Image.MAX_IMAGE_PIXELS ({limit:,}): a decompression bomb?")


def decode(path, channels: int = 3, size=None, draft: bool = True) -> np.ndarray:
    """Reads one image file as float32 pixels in [0, 255], channels last.

    Args:
        path: the file.
        channels: 1 (grayscale) or 3 (RGB).
        size: resize to ``(height, width)`` (or an int) with `resize`;
            ``None`` keeps the image's own size.
        draft: with `size`, let a JPEG at least twice as large decode at a
            reduced scale (`PIL.Image.Image.draft`), still at least `size`.

    Returns:
        ``(height, width, channels)`` float32.

    Raises:
        UnreadableImageError: a ValueError naming the file and the reason.
    """
    Image = _pillow()
    path = os.fspath(path)
    size = image_size_pair(size, "size")
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImageError(path, "empty file (0 bytes)")
        with Image.open(path) as img:
            if size is not None and draft and img.format == "JPEG":
                img.draft(None, (size[1], size[0]))  # (width, height); mode unchanged
            check_pixels(img, path)
            img.load()
            array = _pixels(img, channels)
    except UnreadableImageError:
        raise
    except Exception as e:  # Pillow raises many types for bad files
        raise UnreadableImageError(path, _reason(path, e)) from None
    return resize(array, size) if size is not None else array.astype("float32")


@functools.lru_cache(maxsize=None)
def _pillow():
    return extras.import_from("train", "PIL.Image", "reading image files")


def say_skipped(path: str, reason: str) -> None:
    """The default report of a skipped file: one line on stderr."""
    print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Batch:
    """One batch of `ImageFiles`.

    Attributes:
        x: ``(n, h, w, c)`` float32, or a list of arrays of their own sizes
            when `ImageFiles` has no size; ``n`` may be below the batch size
            (the last batch, skipped files) and 0.
        y: the labels of the kept images, or ``None``.
        paths: the files of `x`, in order.
    """

    x: object
    y: Optional[np.ndarray]
    paths: list


def _shift_and_flip(x: np.ndarray, rng, max_shift: tuple) -> np.ndarray:
    """Each image flipped left-right with probability 1/2 and shifted by up
    to `max_shift` ``(rows, columns)`` whole pixels, zero fill."""
    out = np.where((rng.random(len(x)) < 0.5)[:, None, None, None], x[:, :, ::-1], x)
    dy, dx = max_shift
    if dy or dx:
        h, w = x.shape[1:3]
        padded = np.pad(out, ((0, 0), (dy, dy), (dx, dx), (0, 0)))
        shifts = np.stack([rng.integers(0, 2 * dy + 1, len(x)), rng.integers(0, 2 * dx + 1, len(x))], axis=1)
        for i, (sy, sx) in enumerate(shifts):
            out[i] = padded[i, sy : sy + h, sx : sx + w]
    return out


class ImageFiles:
    """Image files read lazily in batches (Keras-free; `image_batches` wraps
    it as a `keras.utils.PyDataset`).

    Args:
        paths: the files, in order (see `listing.list_images`).
        image_size: ``(height, width)`` or an int: every image resized to
            it; ``None``: each at its own size (`Batch.x` is then a list).
        batch_size: files per batch.
        channels: 1 or 3.
        labels: one int per file, or ``None``.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).
        preprocess: a function applied to each batch array (e.g.
            `keras_densenet.preprocess_input`), in the reading thread.
        shuffle: reorder the files every epoch (`new_epoch`), seeded.
        augment: random flips and shifts (up to a tenth of each side).
        seed: seed of the shuffling and the augmentation; each batch draws
            from ``(seed, epoch, index)``, so the result does not depend on
            which thread reads it.
        drop_remainder: every batch full (when there is one full batch).
        multiple: cut each batch to a multiple of this (the devices a batch
            splits over); empty batches are left out.
        draft: see `decode`.
        on_skip: called with ``(path, reason)`` for each skipped file;
            default: `say_skipped`.
        decoder: the function that reads one file (`decode`'s arguments).
    """

    def __init__(self, paths: Sequence, image_size=None, batch_size: int = 32, channels: int = 3,
                 labels=None, on_error: str = "skip", preprocess: Optional[Callable] = None,
                 shuffle: bool = False, augment: bool = False, seed: int = 0, drop_remainder: bool = False,
                 multiple: int = 1, draft: bool = True, on_skip: Optional[Callable] = None,
                 decoder: Callable = decode):
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise ValueError("`paths`: no image files")
        self.size = image_size_pair(image_size)
        self.batch_size = checks.integer("batch_size", batch_size, minimum=1)
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
        self.channels = channels
        self.labels = None if labels is None else np.asarray(labels, "int32")
        if self.labels is not None and len(self.labels) != len(self.paths):
            raise ValueError(f"`labels`: {len(self.labels)} labels for {len(self.paths)} files")
        self.on_error = check_on_error(on_error)
        if augment and self.size is None:
            raise ValueError("`augment` needs an `image_size`")
        self.preprocess, self.shuffle, self.augment, self.seed = preprocess, shuffle, augment, seed
        self.multiple = checks.integer("multiple", multiple, minimum=1)
        if self.batch_size % self.multiple:
            raise ValueError(f"`batch_size` ({batch_size}) must be a multiple of `multiple` ({multiple})")
        self.drop_remainder = drop_remainder and len(self.paths) >= self.batch_size
        self.draft, self.decoder = draft, decoder
        self.on_skip = say_skipped if on_skip is None else on_skip
        #: ``(path, reason)`` of every file skipped so far.
        self.skipped = []
        self._bad = set()
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.paths))

    def __len__(self) -> int:
        full, rest = divmod(len(self.paths), self.batch_size)
        return full + (0 if self.drop_remainder or rest < self.multiple else 1)

    def new_epoch(self) -> None:
        """The next epoch: a new order when shuffling, new augmentations."""
        self.epoch += 1
        self.order = self._order()

    def _positions(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return picked[: len(picked) // self.multiple * self.multiple]

    def batch_paths(self, index: int) -> list:
        """The files batch `index` holds, skipped ones left out (known once
        it has been read)."""
        return [self.paths[i] for i in self._positions(index) if self.paths[i] not in self._bad]

    def read(self, path: str) -> Optional[np.ndarray]:
        """One file through `decoder`; ``None`` when it is skipped."""
        if path in self._bad:
            return None
        try:
            return self.decoder(path, channels=self.channels, size=self.size, draft=self.draft)
        except UnreadableImageError as e:
            if self.on_error == "raise":
                raise
            if path not in self._bad:
                self._bad.add(path)
                self.skipped.append((path, e.reason))
                self.on_skip(path, e.reason)
            return None

    def batch(self, index: int) -> Batch:
        """Reads batch `index` (safe to call from several threads at once)."""
        kept, images = [], []
        for i in self._positions(index):
            image = self.read(self.paths[i])
            if image is not None:
                kept.append(i)
                images.append(image)
        if self.multiple > 1:  # skipped files must not leave a batch uneven
            keep = len(kept) // self.multiple * self.multiple
            kept, images = kept[:keep], images[:keep]
        y = None if self.labels is None else self.labels[kept]
        if self.size is None:
            return Batch(images, y, [self.paths[i] for i in kept])
        if images:
            x = np.stack(images)
        else:
            x = np.zeros((0, *self.size, self.channels), "float32")
        if self.augment and len(x):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = _shift_and_flip(x, rng, (self.size[0] // 10, self.size[1] // 10))
        if self.preprocess is not None:
            x = np.asarray(self.preprocess(x), "float32")
        return Batch(x, y, [self.paths[i] for i in kept])


def prefetch(files: ImageFiles, workers: Optional[int] = None, max_queue_size: Optional[int] = None,
             indices: Optional[Sequence[int]] = None) -> Iterator[Batch]:
    """The batches of `files` in order, read by `workers` threads while the
    caller works on the current one; at most `max_queue_size` batches are
    read ahead (decoded or being decoded) besides the one the caller holds,
    so at most ``max_queue_size + 1`` batches are in memory.

    Example:

    >>> files = ImageFiles(["a.png", "b.png"], 32, batch_size=1)  # doctest: +SKIP
    >>> [b.paths for b in prefetch(files, workers=2)]  # doctest: +SKIP
    [['a.png'], ['b.png']]
    """
    workers = DEFAULT_WORKERS if workers is None else checks.integer("workers", workers, minimum=1)
    ahead = DEFAULT_QUEUE if max_queue_size is None else checks.integer("max_queue_size", max_queue_size, minimum=1)
    todo = iter(range(len(files)) if indices is None else indices)
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="keras_densenet_images")
    pending = collections.deque()

    def refill():
        while len(pending) < ahead:
            index = next(todo, None)
            if index is None:
                return
            pending.append(pool.submit(files.batch, index))

    try:
        while True:
            refill()
            if not pending:
                return
            current = pending.popleft()
            refill()  # `ahead` batches in flight while the caller works on this one
            yield current.result()
    finally:  # also when the caller stops early or fails: no thread keeps reading
        pool.shutdown(wait=True, cancel_futures=True)


@functools.lru_cache(maxsize=None)
def _py_dataset_class():
    import keras

    class ImageBatches(keras.utils.PyDataset):
        """`ImageFiles` as a `keras.utils.PyDataset`: ``x`` batches, or
        ``(x, y)`` with labels. The `ImageFiles` is `files`; `paths`,
        `skipped` and `batch_paths` are its own."""

        def __init__(self, files: ImageFiles, workers: int, max_queue_size: int):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
            self.files = files

        def __len__(self):
            return len(self.files)

        def __getitem__(self, index):
            batch = self.files.batch(index)
            return batch.x if batch.y is None else (batch.x, batch.y)

        def on_epoch_end(self):
            self.files.new_epoch()

        @property
        def paths(self):
            return self.files.paths

        @property
        def skipped(self):
            return self.files.skipped

        def batch_paths(self, index: int) -> list:
            return self.files.batch_paths(index)

        def read_paths(self) -> list:
            """The files a pass over every batch read, in order (after an
            unshuffled ``model.predict(ds)``: one per output row)."""
            return [p for i in range(len(self)) for p in self.batch_paths(i)]

    return ImageBatches


def image_batches(inputs, image_size, batch_size: int = 32, *, channels: int = 3, labels=None,
                  on_error: str = "skip", workers: Optional[int] = None, max_queue_size: Optional[int] = None,
                  **options):
    """A `keras.utils.PyDataset` of image files for ``model.fit``,
    ``model.predict`` or ``model.evaluate``, on every backend.

    Worker threads decode the next batches while the model runs; memory
    holds about ``max_queue_size + workers`` batches.

    Args:
        inputs: image files, directories or glob patterns
            (`listing.list_images`); with `labels`, a sequence of files
            taken as they are.
        image_size: ``(height, width)`` or an int.
        batch_size: images per batch.
        channels: 1 or 3.
        labels: one int per file: batches are ``(x, y)``.
        on_error: ``"skip"`` (default) or ``"raise"``.
        workers: decoding threads (default `DEFAULT_WORKERS`).
        max_queue_size: batches read ahead (default `DEFAULT_QUEUE`).
        **options: the other arguments of `ImageFiles` (``preprocess``,
            ``shuffle``, ``augment``, ``seed``...).

    Returns:
        An ``ImageBatches`` PyDataset with the `ImageFiles` as ``files``.

    Example:

    >>> ds = image_batches("photos/", 224, batch_size=32)  # doctest: +SKIP
    >>> probs = model.predict(ds)  # doctest: +SKIP
    >>> rows = dict(zip(ds.read_paths(), probs))  # skipped files left out  # doctest: +SKIP
    """
    from keras_densenet.data import listing

    if image_size_pair(image_size) is None:
        raise ValueError("`image_size`: a PyDataset's batches need one size; give an int or (height, width)")
    paths = [os.fspath(p) for p in inputs] if labels is not None else listing.list_images(inputs)
    files = ImageFiles(paths, image_size, batch_size, channels, labels=labels, on_error=on_error, **options)
    workers = DEFAULT_WORKERS if workers is None else checks.integer("workers", workers, minimum=1)
    queue = DEFAULT_QUEUE if max_queue_size is None else checks.integer("max_queue_size", max_queue_size, minimum=1)
    return _py_dataset_class()(files, workers, queue)
