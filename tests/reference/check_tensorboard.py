r"""Checks a moetron run directory's TensorBoard event files with TensorBoard itself (from PyPI),
against the run's metrics.jsonl. Run by hand, in its own venv; not part of CI:

    python3 -m venv .cache/venv-tensorboard
    .cache/venv-tensorboard/bin/pip install tensorboard      # pulls in numpy, pillow, protobuf
    .cache/venv-tensorboard/bin/python tests/reference/check_tensorboard.py RUN_DIR [--serve PORT]

RUN_DIR is a logging.run_dir (it holds metrics.jsonl and tensorboard/), e.g. from
    build/trainer/moetron train configs/tiny.pbtxt --set schedule.total_steps=20 \
        --set schedule.warmup_steps=2 --set logging.val_interval=10 \
        --set logging.run_dir=/tmp/qw/tb1

What it checks (exits non-zero with the reasons):
  * records: every file RUN_DIR/tensorboard/events.out.tfevents.* is read record by record:
    uint64 LE length, masked CRC32C of the length, Event, masked CRC32C of the Event, both CRCs
    checked with TensorBoard's own masked_crc32c, the file consumed exactly; each Event parses as
    TensorBoard's event_pb2.Event with no unknown fields; the first is file_version
    "brain.Event:2", each other holds one summary value (simple_value, or an image);
  * EventAccumulator (size_guidance 0: keep everything) loads the directory and logs nothing at
    WARNING or above and no "Truncated record" (TensorBoard swallows a CRC failure as a
    truncation at DEBUG level and silently stops reading the file there);
  * its scalar tags are exactly metrics.jsonl's numbers: each key but "kind" and "step", each
    element of an array of at most 64 as KEY/INDEX, nulls left out; each tag's (step, value)
    sequence is the lines' in order, the value the float32 of the jsonl number (exactly);
  * the image tag moe/expert_load: one image per validation step with MoE layers, colorspace 1,
    a PNG that Pillow verifies (chunk CRCs) and decodes to mode "L" of the stated width x
    height, its pixels exactly the heatmap of that step's moe.*.counts in metrics.jsonl (a row of
    cells per layer, a column per expert, cell = clamp(512 / experts, 1, 16) pixels,
    255 * count // largest count of the step);
  * --serve PORT: starts `tensorboard --logdir RUN_DIR --extra_data_server_flags=--checksum`
    (its Rust data server, the default fast loader, is a second, independent reader; --checksum
    makes it check every record's CRC, not only those that fail to parse), fetches
    /data/plugin/scalars/tags, /data/plugin/images/tags, the loss and val_loss series and the
    image list over HTTP, compares them with the above, stops it, and fails on WARN/ERROR lines
    in its output.
"""

import argparse
import glob
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

import tensorboard
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

MAX_ARRAY = 64  # trainer.cc kTensorBoardArray
IMAGE_TAG = "moe/expert_load"

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def f32(x):
    return float(np.float32(x))


# ----------------------------------------------------------------------------- raw records

def unknown_fields(msg, path="Event"):
    """Paths of unknown fields anywhere in msg (protobuf's UnknownFieldSet, where it exists)."""
    out = []
    try:
        from google.protobuf import unknown_fields as uf
        if len(uf.UnknownFieldSet(msg)):
            out.append(path)
    except ImportError:
        if msg.UnknownFields():
            out.append(path)
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        items = value if repeated else [value]
        for i, item in enumerate(items):
            out += unknown_fields(item, f"{path}.{fd.name}[{i}]")
    return out


def read_records(path):
    data = open(path, "rb").read()
    pos, events = 0, []
    while pos < len(data):
        if len(data) - pos < 12:
            fail(f"{path}: {len(data) - pos} trailing bytes at offset {pos} (a partial header)")
            break
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if length_crc != masked_crc32c(header):
            fail(f"{path}: record at offset {pos}: length CRC {length_crc:#010x}, "
                 f"expected {masked_crc32c(header):#010x}")
            break
        end = pos + 12 + length + 4
        if end > len(data):
            fail(f"{path}: record at offset {pos} of length {length} runs past the end")
            break
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[end - 4:end])
        if body_crc != masked_crc32c(body):
            fail(f"{path}: record at offset {pos}: data CRC {body_crc:#010x}, "
                 f"expected {masked_crc32c(body):#010x}")
            break
        ev = event_pb2.Event()
        ev.ParseFromString(body)
        unk = unknown_fields(ev)
        if unk:
            fail(f"{path}: record at offset {pos}: unknown fields in {unk}")
        events.append(ev)
        pos = end
    return events, len(data)


def check_records(tb_dir):
    files = sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")))
    if not files:
        fail(f"no events.out.tfevents.* in {tb_dir}")
    kinds = {}
    image_events = []
    for path in files:
        before = len(failures)
        events, size = read_records(path)
        print(f"file {os.path.basename(path)}: {size} bytes, {len(events)} records read"
              + (", every length and data CRC good, the file consumed exactly"
                 if len(failures) == before else ""))
        if not events or events[0].file_version != "brain.Event:2":
            fail(f"{path}: the first record is not file_version brain.Event:2")
        last_step = -1
        for ev in events[1:]:
            if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
                # A resumed run: TensorBoard drops what earlier files hold from this step on.
                print(f"{os.path.basename(path)}: session START at step {ev.step} (a resume)")
                image_events = [(s, im) for s, im in image_events if s < ev.step]
                check_records.restarted = True
                last_step = ev.step
                continue
            if not ev.HasField("summary") or len(ev.summary.value) != 1:
                fail(f"{path}: an event (step {ev.step}) without exactly one summary value")
                continue
            v = ev.summary.value[0]
            kind = v.WhichOneof("value")
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "image":
                image_events.append((ev.step, v.image))
            if ev.step < last_step:
                fail(f"{path}: step {ev.step} after step {last_step}")
            last_step = ev.step
            if ev.wall_time < 1e9:
                fail(f"{path}: wall_time {ev.wall_time}")
    print(f"summary values by kind: {kinds}")
    return image_events


# ----------------------------------------------------------------------------- metrics.jsonl

def expected_scalars(metrics_path):
    """tag -> [(step, float32 value)] as trainer.cc writes them; and the lines by step."""
    want, train_lines = {}, {}
    for line in open(metrics_path):
        d = json.loads(line)
        step = d["step"]
        if d.get("kind") == "train":
            train_lines[step] = d
        for key, value in d.items():
            if key in ("kind", "step") or value is None or isinstance(value, str):
                continue
            if isinstance(value, list):
                if len(value) > MAX_ARRAY:
                    continue
                for i, x in enumerate(value):
                    want.setdefault(f"{key}/{i}", []).append((step, f32(x)))
            else:
                want.setdefault(key, []).append((step, f32(value)))
    return want, train_lines


def expected_heatmap(d):
    layers = [v for k, v in d.items() if k.startswith("moe.") and k.endswith(".counts")]
    experts = len(layers[0])
    cell = min(max(512 // experts, 1), 16)
    largest = max(1, max(max(c) for c in layers))
    counts = np.array(layers, dtype=np.int64)
    img = (255 * counts // largest).astype(np.uint8)
    return np.kron(img, np.ones((cell, cell), dtype=np.uint8)), cell


# ----------------------------------------------------------------------------- accumulator

class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def check_accumulator(run_dir, want, train_lines, raw_images):
    from PIL import Image, PngImagePlugin  # noqa: F401
    import PIL

    tb_logger = logging.getLogger("tensorboard")
    cap = Capture()
    tb_logger.addHandler(cap)
    tb_logger.setLevel(logging.DEBUG)
    guidance = {k: 0 for k in (ea.COMPRESSED_HISTOGRAMS, ea.IMAGES, ea.AUDIO, ea.SCALARS,
                               ea.HISTOGRAMS, ea.TENSORS)}
    acc = ea.EventAccumulator(os.path.join(run_dir, "tensorboard"), size_guidance=guidance)
    acc.Reload()
    tb_logger.removeHandler(cap)
    # After a resume's session START, TensorBoard warns that it purges the steps the resume
    # repeats: expected then.
    purge = lambda r: getattr(check_records, "restarted", False) and "Purging expired" in r.getMessage()
    bad = [r for r in cap.records
           if (r.levelno >= logging.WARNING and not purge(r)) or "Truncated record" in r.getMessage()
           or "crc" in r.getMessage().lower() or "DataLoss" in r.getMessage()]
    print(f"EventAccumulator log: {len(cap.records)} records, "
          f"{sum(r.levelno >= logging.WARNING for r in cap.records)} at WARNING or above")
    for r in cap.records:
        print(f"  [{r.levelname}] {r.getMessage()}")
    for r in bad:
        fail(f"TensorBoard logged: [{r.levelname}] {r.getMessage()}")

    tags = acc.Tags()
    scalar_tags = tags["scalars"]
    print(f"scalar tags: {len(scalar_tags)}")
    print("  " + ", ".join(scalar_tags))
    if set(scalar_tags) != set(want):
        fail("scalar tags differ from metrics.jsonl: missing "
             f"{sorted(set(want) - set(scalar_tags))}"
             f", extra {sorted(set(scalar_tags) - set(want))}")
    worst = 0.0
    mismatched = 0
    wrong_steps = []
    for tag in sorted(set(scalar_tags) & set(want)):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        exp = want[tag]
        if [s for s, _ in got] != [s for s, _ in exp]:
            wrong_steps.append(f"{tag}: steps {[s for s, _ in got]}, "
                               f"metrics.jsonl {[s for s, _ in exp]}")
            continue
        for (s, g), (_, e) in zip(got, exp):
            if g != e and not (np.isnan(g) and np.isnan(e)):
                mismatched += 1
                worst = max(worst, abs(g - e) / max(abs(e), 1e-30))
    if wrong_steps:
        fail(f"{len(wrong_steps)} scalar tags have other steps than metrics.jsonl, e.g. "
             + "; ".join(wrong_steps[:3]))
    if mismatched:
        fail(f"{mismatched} scalar values differ from float32(metrics.jsonl) "
             f"(worst relative {worst:.3g})")
    print(f"scalar values: {sum(len(v) for v in want.values())} compared with "
          f"float32(metrics.jsonl), {mismatched} differ")
    for tag in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "max_violation", "val_loss",
                "val_mtp_loss_1"):
        if tag in scalar_tags:
            ev = acc.Scalars(tag)
            print(f"  {tag}: {len(ev)} events, steps {[e.step for e in ev]}, "
                  f"values {[round(e.value, 6) for e in ev][:4]}{' ...' if len(ev) > 4 else ''}")
        else:
            print(f"  {tag}: absent")
    loss = acc.Scalars("loss") if "loss" in scalar_tags else []
    steps = sorted(train_lines)
    if [e.step for e in loss] != steps:
        fail(f"loss steps {[e.step for e in loss]}, train lines {steps}")

    # images
    print(f"image tags: {tags['images']}")
    image_steps = []
    if IMAGE_TAG in tags["images"]:
        for im, (raw_step, raw) in zip(acc.Images(IMAGE_TAG), raw_images):
            image_steps.append(im.step)
            png = im.encoded_image_string
            pil = Image.open(io.BytesIO(png))
            fmt = pil.format
            pil.verify()  # chunk CRCs, structure
            pil = Image.open(io.BytesIO(png))
            pil.load()
            a = np.asarray(pil)
            print(f"  step {im.step}: {im.width}x{im.height}, colorspace {raw.colorspace}, "
                  f"{len(png)} PNG bytes; Pillow: {fmt} mode {pil.mode} size {pil.size}, "
                  f"pixels min {a.min()} max {a.max()} mean {a.mean():.1f}, "
                  f"{len(np.unique(a))} distinct values")
            if raw_step != im.step or raw.width != im.width or raw.height != im.height:
                fail(f"image at step {im.step}: the raw record says step {raw_step}")
            if fmt != "PNG" or pil.mode != "L" or pil.size != (im.width, im.height):
                fail(f"image at step {im.step}: {fmt} {pil.mode} {pil.size}, the event says "
                     f"{im.width}x{im.height} grayscale")
            if raw.colorspace != 1:
                fail(f"image at step {im.step}: colorspace {raw.colorspace}, not 1")
            if im.step not in train_lines:
                fail(f"image at step {im.step}: no train line at that step")
                continue
            exp, cell = expected_heatmap(train_lines[im.step])
            if exp.shape != a.shape or not np.array_equal(exp, a):
                fail(f"image at step {im.step}: pixels are not the heatmap of metrics.jsonl's "
                     f"counts (expected shape {exp.shape}, got {a.shape})")
            else:
                rows = a[::cell, ::cell]
                print(f"    = heatmap of metrics.jsonl's counts at step {im.step} "
                      f"({rows.shape[0]} layers x {rows.shape[1]} experts, {cell}-pixel cells); "
                      f"cell values by layer: {rows.tolist()}")
        if len(acc.Images(IMAGE_TAG)) != len(raw_images):
            fail(f"{len(acc.Images(IMAGE_TAG))} images in TensorBoard, {len(raw_images)} records")
    print(f"{IMAGE_TAG}: {len(image_steps)} images at steps {image_steps}")
    val_steps = sorted({s for s, _ in want.get("val_loss", [])})
    has_moe = any(k.startswith("moe.") and k.endswith(".counts")
                  for d in train_lines.values() for k in d)
    if image_steps != (val_steps if has_moe else []):
        fail(f"{IMAGE_TAG} at steps {image_steps}, validation at steps {val_steps}")
    print(f"(Pillow {PIL.__version__})")
    return scalar_tags, tags["images"], image_steps


# ----------------------------------------------------------------------------- server

def check_server(run_dir, port, scalar_tags, image_tags, want, image_steps):
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(tempfile.mkdtemp(prefix="check_tensorboard."), "serve.log")
    with open(log_path, "wb") as log:
        # --checksum: the data server otherwise checks a record's CRC only when it fails to parse
        proc = subprocess.Popen([exe, "--logdir", run_dir, "--port", str(port),
                                 "--host", "127.0.0.1", "--extra_data_server_flags=--checksum"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def get(path):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return json.load(r)

        runs = None
        for _ in range(120):
            if proc.poll() is not None:
                break
            try:
                runs = get("/data/runs")
                if runs:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        time.sleep(6)  # a load cycle of the data server after the first answer
        print(f"server: runs {runs}")
        if not runs:
            fail("tensorboard --logdir served no runs")
            return
        run = runs[0]
        served = get("/data/plugin/scalars/tags").get(run, {})
        print(f"server: /data/plugin/scalars/tags has {len(served)} tags for run {run!r}")
        if set(served) != set(scalar_tags):
            fail(f"served scalar tags differ: missing {sorted(set(scalar_tags) - set(served))}, "
                 f"extra {sorted(set(served) - set(scalar_tags))}")
        served_images = get("/data/plugin/images/tags").get(run, {})
        print(f"server: /data/plugin/images/tags: {served_images}")
        if set(served_images) != set(image_tags):
            fail(f"served image tags {sorted(served_images)}, accumulator {sorted(image_tags)}")
        for tag in ("loss", "val_loss"):
            if tag not in want:
                continue
            series = get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
            got = [(s, f32(v)) for _, s, v in series]
            print(f"server: {tag}: {len(got)} points, steps {[s for s, _ in got]}")
            if got != want[tag]:
                fail(f"served {tag} {got} differs from metrics.jsonl {want[tag]}")
        if IMAGE_TAG in image_tags:
            ims = get(f"/data/plugin/images/images?run={run}&tag={IMAGE_TAG}&sample=0")
            steps = [i["step"] for i in ims]
            print(f"server: {IMAGE_TAG}: images at steps {steps}")
            if steps != image_steps:
                fail(f"served images at steps {steps}, accumulator {image_steps}")
            for i in ims:
                with urllib.request.urlopen(
                        f"{base}/data/plugin/images/individualImage?{i['query']}", timeout=10) as r:
                    body = r.read()
                if body[:8] != b"\x89PNG\r\n\x1a\n":
                    fail(f"served image at step {i['step']} is not a PNG")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = open(log_path, errors="replace").read()
    bad = [l for l in text.splitlines()
           if " WARN " in l or " ERROR " in l or l.startswith(("W", "E"))
           or "crc" in l.lower() or "data loss" in l.lower()]
    print(f"server: log {log_path}: {len(text.splitlines())} lines, {len(bad)} warnings/errors")
    for l in bad:
        fail(f"tensorboard server logged: {l}")
    if not bad:
        shutil.rmtree(os.path.dirname(log_path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--serve", type=int, metavar="PORT",
                    help="also run `tensorboard --logdir RUN_DIR --port PORT` and query it")
    args = ap.parse_args()
    import google.protobuf
    import PIL
    print(f"tensorboard {tensorboard.__version__}, protobuf {google.protobuf.__version__}, "
          f"numpy {np.__version__}, Pillow {PIL.__version__}, Python {sys.version.split()[0]}")
    raw_images = check_records(os.path.join(args.run_dir, "tensorboard"))
    want, train_lines = expected_scalars(os.path.join(args.run_dir, "metrics.jsonl"))
    scalar_tags, image_tags, image_steps = check_accumulator(args.run_dir, want, train_lines,
                                                             raw_images)
    if args.serve:
        check_server(args.run_dir, args.serve, scalar_tags, image_tags, want, image_steps)
    if failures:
        print(f"{len(failures)} FAILURES")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
