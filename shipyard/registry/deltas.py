"""Deltas between two safetensors files: what changed, tensor by tensor, lossless, applied byte for byte.

Consecutive releases of an RL run differ in few weights, so a consumer that holds the release before can build
the next one from its own copy plus a delta. `encode` writes, for each tensor of the new file (in the order of its
data), the smallest of:

- SAME: nothing, when its bytes equal the old file's tensor of the same name;
- XOR: the XOR of both bit patterns, zstd-compressed (changed elements touch few bits; unchanged ones are zeros);
- SPARSE: the indexes of the changed elements (delta-coded) and their new values, zstd-compressed;
- FULL: the tensor's bytes, zstd-compressed (a new tensor, another dtype or shape, or one that changed throughout).

The new file's header is kept verbatim and any bytes between tensors as RAW records, so `apply` rebuilds the
file byte for byte; the caller checks its digest against the manifest's. Both work one tensor at a time: memory
is a few times the largest tensor, never a whole shard.

Format: `MAGIC`, the new file's header (u64 length, bytes), then records until the end: kind (u8), name (u16
length, UTF-8), payload (u64 length, bytes). Little-endian. Called by publishing (`shipyard.registry.publish`),
which stores a delta per changed safetensors file against the release before it on the line, and by `pull --from`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from shipyard.errors import LedgerError

MAGIC = b"SHIPYARD-DELTA-1\n"
SAME, XOR, SPARSE, FULL, RAW = range(5)
WIDTH = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
UNSIGNED = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}
LEVEL = 3  # zstd: fast, and most of the gain on bit patterns that are mostly zeros
MAX_HEADER = 100 << 20  # safetensors' own limit on a header
MAX_TRAILER = 64 << 20  # bytes after the last tensor (safetensors writes none)
SPARSE_HEAD = struct.calcsize("<BQ")  # element width, count


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int


@dataclass(frozen=True)
class Layout:
    """A safetensors file's header bytes (with its length prefix) and its tensors in data order."""

    header: bytes
    tensors: list[Tensor]

    @property
    def data_start(self) -> int:
        return len(self.header)

    def by_name(self) -> dict[str, Tensor]:
        return {t.name: t for t in self.tensors}


def layout(path: Path) -> Layout | None:
    """The file's layout, or None if it is not a safetensors file."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return None
        (n,) = struct.unpack("<Q", prefix)
        return parse(prefix + f.read(n)) if n <= MAX_HEADER else None


def parse(header: bytes) -> Layout | None:
    """The layout a safetensors header (length prefix included) describes, or None if it is not one."""
    try:
        meta = json.loads(header[8:])
        tensors = [
            Tensor(name, m["dtype"], tuple(m["shape"]), int(m["data_offsets"][0]), int(m["data_offsets"][1]))
            for name, m in meta.items()
            if name != "__metadata__"
        ]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    if any(not 0 <= t.begin <= t.end for t in tensors):
        return None
    return Layout(header, sorted(tensors, key=lambda t: t.begin))


def encode(base: Path, target: Path, out: Path) -> bool:
    """Write the delta that turns `base` into `target` to `out`; False (nothing written) when either is not a
    safetensors file."""
    old, new = layout(base), layout(target)
    if old is None or new is None:
        return False
    import zstandard

    compress = zstandard.ZstdCompressor(level=LEVEL).compress
    olds = old.by_name()
    with base.open("rb") as b, target.open("rb") as t, out.open("wb") as o:
        o.write(MAGIC + struct.pack("<Q", len(new.header)) + new.header)
        at = 0
        for tensor in new.tensors:
            if tensor.begin > at:  # bytes no tensor claims: kept as they are
                _record(o, RAW, "", compress(_read(t, new.data_start + at, tensor.begin - at)))
            mine = _read(t, new.data_start + tensor.begin, tensor.end - tensor.begin)
            theirs = olds.get(tensor.name)
            alike = theirs is not None and (theirs.dtype, theirs.shape) == (tensor.dtype, tensor.shape)
            if theirs is None or not alike:
                _record(o, FULL, tensor.name, compress(mine))
            else:
                before = _read(b, old.data_start + theirs.begin, theirs.end - theirs.begin)
                _record(o, *_smallest(tensor, mine, before, compress))
            at = max(at, tensor.end)
        rest = _read(t, new.data_start + at, target.stat().st_size - new.data_start - at)
        if rest:
            _record(o, RAW, "", compress(rest))
    return True


def apply(base: Path, delta: Path, out: Path) -> None:
    """Rebuild the new file from `base` and the delta into `out`, record by record as `encode` wrote them. Raises
    `LedgerError` on a delta that does not fit (the caller then fetches the whole file); no record can expand past
    the size the new file's header gives it."""
    import zstandard

    unzip = zstandard.ZstdDecompressor()
    old = layout(base)
    olds = old.by_name() if old else {}
    with delta.open("rb") as d, base.open("rb") as b, out.open("wb") as o:
        if d.read(len(MAGIC)) != MAGIC:
            raise LedgerError(f"{delta}: not a Shipyard delta")
        (n,) = struct.unpack("<Q", _exact(d, 8, delta))
        new = parse(_exact(d, n, delta)) if n <= MAX_HEADER + 8 else None
        if new is None:
            raise LedgerError(f"{delta}: the new file's header is not a safetensors header")
        o.write(new.header)
        records = _records(d, delta)

        def inflate(payload: bytes, size: int, what: str, exact: bool = True) -> bytes:
            try:
                data = unzip.decompress(payload, max_output_size=size)
            except zstandard.ZstdError as exc:
                raise LedgerError(f"{delta}: {what}: {exc}") from None
            if exact and len(data) != size:
                raise LedgerError(f"{delta}: {what} is {len(data)} bytes, not {size}")
            return data

        at = 0
        for tensor in new.tensors:
            if tensor.begin > at:
                kind, _, payload = _next(records, delta)
                if kind != RAW:
                    raise LedgerError(f"{delta}: expected the bytes before tensor {tensor.name}")
                o.write(inflate(payload, tensor.begin - at, "bytes between tensors"))
            kind, name, payload = _next(records, delta)
            size = tensor.end - tensor.begin
            if name != tensor.name or kind not in (SAME, XOR, SPARSE, FULL):
                raise LedgerError(f"{delta}: expected tensor {tensor.name}, found a record of {name!r}")
            if kind == FULL:
                o.write(inflate(payload, size, name))
            else:
                theirs = olds.get(name)
                if old is None or theirs is None or theirs.end - theirs.begin != size:
                    raise LedgerError(f"{delta}: tensor {name} is not in {base} as it was")
                before = _read(b, old.data_start + theirs.begin, size)
                if kind == SAME:
                    o.write(before)
                elif kind == XOR:
                    patch = np.frombuffer(inflate(payload, size, name), np.uint8)
                    o.write(np.bitwise_xor(np.frombuffer(before, np.uint8), patch).tobytes())
                else:
                    most = SPARSE_HEAD + size * 9  # every element changed, 1-byte elements: index and value
                    o.write(_unsparse(name, before, inflate(payload, most, name, exact=False), delta))
            at = max(at, tensor.end)
        for kind, _, payload in records:
            if kind != RAW:
                raise LedgerError(f"{delta}: a record past the last tensor")
            o.write(inflate(payload, MAX_TRAILER, "bytes after the tensors", exact=False))


def _smallest(tensor: Tensor, mine: bytes, before: bytes, compress: Callable[[bytes], bytes]) -> tuple[int, str, bytes]:
    if mine == before:
        return SAME, tensor.name, b""
    width = WIDTH.get(tensor.dtype, 1) if len(mine) % WIDTH.get(tensor.dtype, 1) == 0 else 1
    kind = UNSIGNED[width]
    ours, theirs = np.frombuffer(mine, kind), np.frombuffer(before, kind)
    changed = np.flatnonzero(ours != theirs)
    steps = np.diff(changed, prepend=0).astype(np.uint64)  # small numbers: they compress
    sparse = struct.pack("<BQ", width, changed.size) + steps.tobytes() + ours[changed].tobytes()
    options = [
        (XOR, compress(np.bitwise_xor(ours, theirs).tobytes())),
        (SPARSE, compress(sparse)),
        (FULL, compress(mine)),
    ]
    chosen, payload = min(options, key=lambda option: len(option[1]))
    return chosen, tensor.name, payload


def _unsparse(name: str, before: bytes, payload: bytes, delta: Path) -> bytes:
    if len(payload) < SPARSE_HEAD:
        raise LedgerError(f"{delta}: the sparse patch of {name} is malformed")
    width, count = struct.unpack_from("<BQ", payload)
    kind = UNSIGNED.get(width)
    start = SPARSE_HEAD
    if kind is None or len(payload) != start + count * 8 + count * width or len(before) % width:
        raise LedgerError(f"{delta}: the sparse patch of {name} is malformed")
    steps = np.frombuffer(payload, np.uint64, count, start)
    values = np.frombuffer(payload, kind, count, start + count * 8)
    result = np.frombuffer(before, kind).copy()
    where = np.cumsum(steps)
    if count and int(where[-1]) >= result.size:
        raise LedgerError(f"{delta}: the sparse patch of {name} reaches past its tensor")
    result[where] = values
    return result.tobytes()


def _record(o: BinaryIO, kind: int, name: str, payload: bytes) -> None:
    encoded = name.encode()
    o.write(struct.pack("<BH", kind, len(encoded)) + encoded + struct.pack("<Q", len(payload)) + payload)


def _records(d: BinaryIO, path: Path) -> Iterator[tuple[int, str, bytes]]:
    while head := d.read(3):
        if len(head) < 3:
            raise LedgerError(f"{path}: truncated")
        kind, n = struct.unpack("<BH", head)
        name = _exact(d, n, path).decode()
        (size,) = struct.unpack("<Q", _exact(d, 8, path))
        yield kind, name, _exact(d, size, path)


def _next(records: Iterator[tuple[int, str, bytes]], path: Path) -> tuple[int, str, bytes]:
    found = next(records, None)
    if found is None:
        raise LedgerError(f"{path}: ends before the last tensor")
    return found


def _read(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _exact(f: BinaryIO, size: int, path: Path) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise LedgerError(f"{path}: truncated")
    return data
