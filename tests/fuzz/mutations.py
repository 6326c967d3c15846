"""Mutations of valid files: byte-level ones (bit flips, zeroed bytes,
truncation, insertions, huge declared sizes) and crafted hostile files
(zip members with ``../`` paths or symbolic links, nested archives,
decompression bombs, pickles that call ``os.system``, HDF5 files with wrong
dtypes, wrong or huge shapes, links).

A byte mutation is a list of ``(kind, position, argument)`` triples of
integers, so the same list comes from a seeded `random.Random`
(`random_ops`, for the campaign) or from hypothesis (`ops_strategy`), and
prints as a reproducible regression case. Keras-free.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import stat
import struct
import zipfile
import zlib

#: Byte mutation kinds; `random_ops` draws the first two most often (the
#: damage a disk or a network does).
KINDS = ("flip", "zero", "byte", "truncate", "insert", "huge", "copy")
_WEIGHTS = (30, 20, 10, 5, 5, 15, 5)
#: Values written by "huge": sizes and offsets no reader should trust.
HUGE = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1 << 40, (1 << 63) - 1, (1 << 64) - 1, 1 << 31, 1 << 48)


def mutate(data: bytes, ops) -> bytes:
    """`data` with each ``(kind, position, argument)`` of `ops` applied."""
    b = bytearray(data)
    for kind, pos, arg in ops:
        if not b:
            break
        at = pos % len(b)
        if kind == "flip":
            b[at] ^= 1 << (arg % 8)
        elif kind == "zero":
            b[at] = 0
        elif kind == "byte":
            b[at] = arg % 256
        elif kind == "truncate":
            del b[at:]
        elif kind == "insert":
            b[at:at] = bytes([arg % 256]) * (arg % 61 + 1)
        elif kind == "huge":
            value = HUGE[arg % len(HUGE)]
            width = 8 if value >= 1 << 32 or arg % 2 else 4
            b[at:at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif kind == "copy":
            chunk = bytes(b[at:at + 64])
            dst = (at + arg) % len(b)
            b[dst:dst + len(chunk)] = chunk
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return bytes(b)


def random_ops(rng: random.Random, max_ops: int = 20) -> list:
    """1 to `max_ops` byte mutations, drawn from `rng`."""
    return [
        (rng.choices(KINDS, _WEIGHTS)[0], rng.randrange(1 << 31), rng.randrange(1 << 31))
        for _ in range(rng.randint(1, max_ops))
    ]


def ops_strategy(max_ops: int = 20):
    """The hypothesis strategy of `random_ops`' lists (shrinks to fewer,
    smaller mutations)."""
    from hypothesis import strategies as st

    op = st.tuples(st.sampled_from(KINDS), st.integers(0, (1 << 31) - 1), st.integers(0, (1 << 31) - 1))
    return st.lists(op, min_size=1, max_size=max_ops)


def find(data: bytes, marker: bytes, occurrence: int = 0) -> int:
    """Offset of the `occurrence`-th `marker` in `data` (an HDF5 signature
    such as ``b"TREE"``, ``b"HEAP"``, ``b"SNOD"``), so regression cases name
    a structure instead of an offset that changes with the writer."""
    at = -1
    for _ in range(occurrence + 1):
        at = data.index(marker, at + 1)
    return at


# -- zip archives ------------------------------------------------------------


def zip_members(data: bytes) -> list:
    """``[(name, bytes)]`` of a zip archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def make_zip(members, compression=zipfile.ZIP_STORED, symlinks=()) -> bytes:
    """A zip archive of ``[(name, bytes)]``; names in `symlinks` are stored
    as symbolic links (their bytes are the target)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, content in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, content)
    return out.getvalue()


def replace_member(data: bytes, name: str, content: bytes) -> bytes:
    """Archive `data` with member `name`'s bytes replaced (CRCs stay right,
    so the damage reaches the reader of the member, not zipfile's check)."""
    return make_zip([(n, content if n == name else c) for n, c in zip_members(data)])


def mutate_member(data: bytes, name: str, ops) -> bytes:
    """Archive `data` with member `name` byte-mutated by `ops`."""
    return replace_member(data, name, mutate(dict(zip_members(data))[name], ops))


def bomb(size: int = 1 << 30) -> tuple:
    """`size` zero bytes, deflated (about 1 MB per GB): ``(raw deflate
    stream, crc32 of the expanded bytes)``."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk, crc, parts = bytes(16 << 20), 0, []
    for _ in range(size // len(chunk)):
        parts.append(z.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    return b"".join(parts) + z.flush(), crc


def zip_with_bomb(members, name: str, size: int = 1 << 30) -> bytes:
    """A zip archive of `members` plus member `name`, deflated zeros that
    expand to `size` bytes (a decompression bomb)."""
    raw, crc = bomb(size)
    entries = [(n, c, zipfile.ZIP_STORED, len(c), zlib.crc32(c)) for n, c in members if n != name]
    return _raw_zip(entries + [(name, raw, zipfile.ZIP_DEFLATED, size, crc)])


def _raw_zip(entries) -> bytes:
    """A zip archive of ``(name, stored bytes, method, uncompressed size,
    crc)`` entries, written by hand (sizes up to 4 GB)."""
    body, central = bytearray(), bytearray()
    for name, data, method, size, crc in entries:
        raw_name = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(raw_name), 0)
        body += raw_name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(raw_name), 0, 0, 0, 0, 0, offset)
        central += raw_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return bytes(body + central + end)


def hostile_zips(valid: bytes, inner: str, marker: str) -> dict:
    """Crafted archives from valid archive `valid` whose main member is
    `inner`: ``{name: bytes}``."""
    members = zip_members(valid)
    return {
        "dotdot member": make_zip(members + [("../../escaped.txt", b"escaped")]),
        "absolute member": make_zip(members + [("/tmp/kd_fuzz_absolute.txt", b"escaped")]),
        "symlink member": make_zip(members + [("assets/link", marker.encode())], symlinks=("assets/link",)),
        "symlink main member": make_zip([(n, marker.encode() if n == inner else c) for n, c in members],
                                        symlinks=(inner,)),
        "nested archive": replace_member(valid, inner, valid),
        "deflated copy": make_zip(members, zipfile.ZIP_DEFLATED),
        "empty main member": replace_member(valid, inner, b""),
        "main member missing": make_zip([(n, c) for n, c in members if n != inner]),
        "duplicate main member": make_zip(members + [(inner, b"second copy")]),
    }


# -- pickles -----------------------------------------------------------------


class _System:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def pickle_calling_system(marker: str, protocol: int = 2) -> bytes:
    """A pickle that runs ``touch MARKER`` when unpickled by an unrestricted
    unpickler (`marker`'s existence afterwards shows that code ran)."""
    return pickle.dumps({"features.conv0.weight": _System(f"touch {marker}")}, protocol=protocol)


def torch_zip_with_pickle(valid_pth: bytes, payload: bytes) -> bytes:
    """A torch ``.pth`` zip whose ``data.pkl`` is `payload`."""
    members = zip_members(valid_pth)
    return make_zip([(n, payload if n.endswith("data.pkl") else c) for n, c in members])


# -- JSON ----------------------------------------------------------------------


def json_variants(valid) -> dict:
    """Hostile JSON documents for a file that should hold `valid`."""
    return {
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "deep object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "huge integer": b"[" + b"9" * 100_000 + b"]",
        "huge string": json.dumps(["x" * (8 << 20)]).encode(),
        "not utf8": b'["\xff\xfe\xfa"]',
        "utf16": json.dumps(valid).encode("utf-16"),
        "nan": b"[NaN, Infinity]",
        "object": b'{"names": ["a"]}',
        "numbers": b"[1, 2, 3]",
        "nulls": b"[null]",
        "empty": b"",
        "bom": b"\xef\xbb\xbf" + json.dumps(valid).encode(),
        "nul bytes": b"[\"a\x00b\"]",
        "trailing garbage": json.dumps(valid).encode() + b"}}}",
    }


def json_value_strategy():
    """hypothesis: any JSON value (shallow), as bytes."""
    from hypothesis import strategies as st

    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                          max_size=4), max_leaves=12)
    return value.map(lambda v: json.dumps(v).encode())
