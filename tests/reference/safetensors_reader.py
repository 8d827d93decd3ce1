"""An independent reader of Hugging Face model directories in the safetensors format, for
checking `moetron export` (docs/export.md) without the safetensors package.

The format: an 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON (tensor name
-> {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the byte after the
header, plus an optional "__metadata__" of strings), then the data. Only F32 and BF16 are needed
here; BF16 is widened to float32 exactly (its bits are the top half of a float32's).

    python3 tests/reference/safetensors_reader.py DIR   # lists every tensor, checks the index
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

DTYPES = {"F32": (np.dtype("<f4"), 4), "BF16": (np.dtype("<u2"), 2)}


class FormatError(Exception):
    pass


def read_header(path: str) -> tuple[dict, int]:
    """The header dict and the file offset where the data starts. Checks that the tensors tile
    the data section exactly (no gap, no overlap, nothing after)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise FormatError(f"{path}: shorter than the 8-byte header length")
        n = int.from_bytes(raw, "little")
        if n > size - 8:
            raise FormatError(f"{path}: header length {n} runs past the file ({size} bytes)")
        header = json.loads(f.read(n).decode("utf-8"))
    start = 8 + n
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            if not all(isinstance(v, str) for v in t.values()):
                raise FormatError(f"{path}: __metadata__ values must be strings")
            continue
        if t["dtype"] not in DTYPES:
            raise FormatError(f"{path}: {name}: dtype {t['dtype']} not handled here")
        begin, end = t["data_offsets"]
        count = int(np.prod(t["shape"], dtype=np.int64)) if t["shape"] else 1
        if end - begin != count * DTYPES[t["dtype"]][1]:
            raise FormatError(f"{path}: {name}: {end - begin} bytes for shape {t['shape']} {t['dtype']}")
        spans.append((begin, end, name))
    spans.sort()
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise FormatError(f"{path}: {name} starts at {begin}, expected {at} (gap or overlap)")
        at = end
    if start + at != size:
        raise FormatError(f"{path}: the data ends at {start + at}, the file at {size}")
    return header, start


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_file(path: str) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (dtype name, float32 array of the tensor's shape)."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        np_dtype, _ = DTYPES[t["dtype"]]
        begin, end = t["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=np_dtype)
        if t["dtype"] == "BF16":
            a = bf16_to_f32(a)
        out[name] = (t["dtype"], a.astype(np.float32).reshape(t["shape"]))
    return out


def read_dir(directory: str) -> tuple[dict[str, tuple[str, np.ndarray]], dict]:
    """Every tensor of an export directory, through model.safetensors.index.json, which must
    list every tensor of every shard exactly once (and only those). Returns (tensors, index)."""
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        index = json.load(f)
    weight_map = index["weight_map"]
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    total = 0
    for shard in sorted(set(weight_map.values())):
        for name, (dtype, a) in read_file(os.path.join(directory, shard)).items():
            if name in tensors:
                raise FormatError(f"{name} is in more than one shard")
            if weight_map.get(name) != shard:
                raise FormatError(f"{shard} holds {name}, the index says {weight_map.get(name)}")
            tensors[name] = (dtype, a)
            total += a.size * DTYPES[dtype][1]
    missing = set(weight_map) - set(tensors)
    if missing:
        raise FormatError(f"the index lists tensors no shard holds: {sorted(missing)[:5]}")
    if index["metadata"]["total_size"] != total:
        raise FormatError(f"index total_size {index['metadata']['total_size']}, the shards hold {total}")
    return tensors, index


def main() -> int:
    tensors, index = read_dir(sys.argv[1])
    for name in sorted(tensors):
        dtype, a = tensors[name]
        print(f"{name:70s} {dtype:5s} {list(a.shape)}")
    print(f"{len(tensors)} tensors, {len(set(index['weight_map'].values()))} shards, "
          f"{index['metadata']['total_size']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
