#!/usr/bin/python3
"""An independent reader of moetron's TensorBoard event files, for CI (standard library only:
no TensorFlow, TensorBoard or protobuf package).

    /usr/bin/python3 tests/reference/read_tfevents.py RUN_DIR [--summary]

Reads every RUN_DIR/tensorboard/events.out.tfevents.* file: the record framing (little-endian
uint64 length, masked CRC32C of those 8 bytes, the Event, masked CRC32C of it; every CRC
checked), the Event and Summary messages by their protobuf wire format with TensorFlow's field
numbers (Event: wall_time 1, step 2, file_version 3, summary 5; Summary.value 1; Value: tag 1,
simple_value 2, image 4; Image: height 1, width 2, colorspace 3, encoded_image_string 4;
session_log 7 with status 1, START = 1: what earlier files hold from its step on is dropped,
as TensorBoard does), and
each image's PNG (signature, every chunk's CRC-32, the zlib stream through zlib, the size).
Then it checks the files against RUN_DIR/metrics.jsonl: the first record of each file is
file_version "brain.Event:2"; every number of every record of metrics.jsonl (arrays of at most
64 numbers element by element, as key/i) is a scalar of its step with the same float32 value,
and nothing else is; an "moe/expert_load" image exists at each validation step of a run with
MoE layers. Exit status 0 when all holds; else 1, naming the first problem.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
import zlib

MAX_ARRAY = 64


def crc32c(data: bytes) -> int:
    table = crc32c.table
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


crc32c.table = _table()


def masked(c: int) -> int:
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path: str):
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at < len(data):
        if at + 12 > len(data):
            raise ValueError(f"{path}: a truncated record header at byte {at}")
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        if masked(crc32c(header)) != length_crc:
            raise ValueError(f"{path}: the length CRC of the record at byte {at} is wrong")
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        if len(body) != length or masked(crc32c(body)) != body_crc:
            raise ValueError(f"{path}: the data CRC of the record at byte {at} is wrong")
        yield body
        at += 16 + length


def fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message."""
    at = 0

    def varint():
        nonlocal at
        shift = value = 0
        while True:
            b = buf[at]
            at += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while at < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, buf[at:at + 8]
            at += 8
        elif wire == 2:
            n = varint()
            yield number, wire, buf[at:at + n]
            at += n
        elif wire == 5:
            yield number, wire, buf[at:at + 4]
            at += 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")


def check_png(png: bytes, width: int, height: int, channels: int) -> None:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG signature")
    at, idat, size = 8, b"", None
    while at < len(png):
        (n,) = struct.unpack(">I", png[at:at + 4])
        kind, body = png[at + 4:at + 8], png[at + 8:at + 8 + n]
        (crc,) = struct.unpack(">I", png[at + 8 + n:at + 12 + n])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r}: wrong CRC")
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            size = (w, h, depth, color)
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    if size != (width, height, 8, 0 if channels == 1 else 2):
        raise ValueError(f"PNG header {size}, the summary says {width} x {height} x {channels}")
    raw = zlib.decompress(idat)
    if len(raw) != height * (1 + width * channels):
        raise ValueError(f"PNG holds {len(raw)} bytes of scanlines, {width} x {height} needs more")


def read_run(run_dir: str):
    files = sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*")))
    if not files:
        raise ValueError(f"no event files in {run_dir}/tensorboard")
    scalars, images = {}, []
    for path in files:
        first = True
        for body in records(path):
            event = {"summary": []}
            for number, wire, value in fields(body):
                if number == 2:
                    event["step"] = value
                elif number == 3:
                    event["file_version"] = value.decode()
                elif number == 5:
                    for vn, _, v in fields(value):
                        if vn == 1:
                            event["summary"].append(dict(fields_of_value(v)))
                elif number == 7:
                    event["session_start"] = any(n == 1 and x == 1 for n, _, x in fields(value))
            if first and event.get("file_version") != "brain.Event:2":
                raise ValueError(f"{path}: the first record is not file_version brain.Event:2")
            first = False
            if event.get("session_start"):  # a resumed run: later steps start over
                start = event["step"]
                for by_step in scalars.values():
                    for s in [s for s in by_step if s >= start]:
                        del by_step[s]
                images = [i for i in images if i[1] < start]
            for v in event["summary"]:
                if "simple_value" in v:
                    scalars.setdefault(v["tag"], {})[event["step"]] = v["simple_value"]
                if "image" in v:
                    img = v["image"]
                    check_png(img["png"], img["width"], img["height"], img["colorspace"])
                    images.append((v["tag"], event["step"], img["width"], img["height"]))
    return files, scalars, images


def fields_of_value(buf: bytes):
    for number, wire, value in fields(buf):
        if number == 1:
            yield "tag", value.decode()
        elif number == 2:
            yield "simple_value", struct.unpack("<f", value)[0]
        elif number == 4:
            img = {}
            for n, _, x in fields(value):
                img[{1: "height", 2: "width", 3: "colorspace", 4: "png"}[n]] = x
            yield "image", img


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main() -> int:
    run_dir = sys.argv[1]
    try:
        files, scalars, images = read_run(run_dir)
        expected = {}
        val_steps, moe = [], False
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                record = json.loads(line)
                step = record["step"]
                if record.get("kind") == "val":
                    val_steps.append(step)
                for key, value in record.items():
                    if key == "step" or isinstance(value, str) or value is None:
                        continue
                    moe = moe or key.endswith(".counts")
                    if isinstance(value, list):
                        if len(value) <= MAX_ARRAY:
                            for i, x in enumerate(value):
                                expected.setdefault(f"{key}/{i}", {})[step] = f32(x)
                    else:
                        expected.setdefault(key, {})[step] = f32(value)
        if set(scalars) != set(expected):
            missing = sorted(set(expected) - set(scalars))[:5]
            extra = sorted(set(scalars) - set(expected))[:5]
            raise ValueError(f"scalar tags differ from metrics.jsonl's: missing {missing}, "
                             f"extra {extra}")
        for tag, by_step in expected.items():
            if scalars[tag] != by_step:
                bad = next(s for s in by_step if scalars[tag].get(s) != by_step[s])
                raise ValueError(f"{tag} at step {bad}: TensorBoard {scalars[tag].get(bad)}, "
                                 f"metrics.jsonl {by_step[bad]}")
        image_steps = sorted(s for tag, s, _, _ in images if tag == "moe/expert_load")
        if moe and image_steps != sorted(val_steps):
            raise ValueError(f"expert-load images at steps {image_steps}, validations at "
                             f"{sorted(val_steps)}")
    except (ValueError, KeyError, OSError, zlib.error) as e:
        print(f"read_tfevents: {run_dir}: {e}")
        return 1
    n = sum(len(v) for v in scalars.values())
    print(f"read_tfevents: ok: {len(files)} file(s), {len(scalars)} scalar tags, {n} values "
          f"(each metrics.jsonl number, float32), {len(images)} image(s) "
          f"{sorted(set((w, h) for _, _, w, h in images))}")
    if "--summary" in sys.argv:
        for tag in sorted(scalars)[:40]:
            print(f"  {tag}: {len(scalars[tag])} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
