"""A small mixed corpus that a pipeline "has never seen", for integration tests.

``make_mixed_corpus(root)`` writes real photos, speech (or recorded sounds),
videos, smartwatch recordings, prose and chat records in every supported
format, plus (``broken=True``) one broken file of every kind, each alone in
its own stem under ``broken/``. It returns ``{relpath: fate}`` for every file
written, where fate is ``"ok"`` or ``"reject:<kind>"``; a sidecar or caption
shares the fate of its group. The folder stays under 2 MB and builds in a few
seconds; the same machine gives the same bytes.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from dataengine import mediaio

SENTENCES = (
    "A small test corpus speaks a few short sentences.",
    "The pipeline should turn this speech into tokens.",
    "Every broken file must become a reject with a reason.",
    "This is the last spoken sentence of the test corpus.",
)
SOUNDS = {"punch": "a punch sound effect", "car_door": "a car door slamming shut",
          "whiff": "a quick whoosh", "boom": "an explosion"}
PHOTOS = {  # stem -> (extension, side, caption)
    "chelsea": (".png", 96, "A close-up photo of a tabby cat with green eyes."),
    "coffee": (".jpg", 128, "A cup of coffee on a red saucer, on a wooden table."),
    "rocket": (".webp", 128, "A rocket on the launch pad at night."),
    "camera": (".bmp", 64, "A black and white photo of a man behind a camera on a tripod."),
}


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def _photo(stem: str, side: int) -> np.ndarray:
    path = next(p for p in sorted((_pkg("skimage") / "data").glob(stem + ".*")) if p.suffix in (".png", ".jpg"))
    with Image.open(path) as im:
        im = im.convert("L" if im.mode == "L" else "RGB")
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
        return np.asarray(im)


def _clips() -> list[tuple[str, np.ndarray, int]]:
    """(text, wave, rate): espeak-ng speech when installed, else pygame's recorded sounds."""
    out = []
    if mediaio.has_espeak():
        with tempfile.TemporaryDirectory(prefix="dataengine-factory-") as tmp:
            for i, text in enumerate(SENTENCES):
                mediaio.speak(text, Path(tmp) / f"{i}.wav", speed_wpm=190)
                wave, sr = sf.read(str(Path(tmp) / f"{i}.wav"), dtype="float32")
                out.append((text, wave, int(sr)))
        return out
    data = _pkg("pygame") / "examples" / "data"
    for name, what in SOUNDS.items():
        wave, sr = sf.read(str(data / f"{name}.wav"), dtype="float32")
        out.append((f"The sound of {what}.", wave[: int(sr)], int(sr)))
    return out


def _bomb_png() -> bytes:
    """A valid PNG header claiming 100000 x 100000 RGB pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _good(root: Path, fates: dict[str, str]) -> dict[str, bytes]:
    """Write the files that should decode; return a few payloads to break later."""
    def put_text(rel: str, text: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
        fates[rel] = "ok"

    for stem, (ext, side, caption) in PHOTOS.items():
        mediaio.write_image(root / f"images/{stem}{ext}", _photo(stem, side), quality=85)
        fates[f"images/{stem}{ext}"] = "ok"
        put_text(f"images/{stem}.txt", caption + "\n")

    clips = _clips()
    for i, ((text, wave, sr), ext) in enumerate(zip(clips, (".wav", ".flac", ".ogg", ".mp3"))):
        mediaio.write_audio(root / f"audio/clip{i}{ext}", wave, sr)
        fates[f"audio/clip{i}{ext}"] = "ok"
        put_text(f"audio/clip{i}.txt", text + "\n")

    text, wave, sr = clips[0]
    seconds = float(np.clip(len(wave) / sr, 1.0, 2.0))
    track = np.zeros(int(seconds * sr), np.float32)
    track[: min(len(track), len(wave))] = wave[: len(track)]
    pz = mediaio.pan_zoom_frames
    videos = {
        "cat_pan.mp4": (pz(_photo("chelsea", 128), "pan_right", int(seconds * 10), 64), track,
                        f"A pan across a photo of a tabby cat, with the audio: {text}"),
        "coffee_zoom.webm": (pz(_photo("coffee", 128), "zoom_in", 12, 64), None,
                             "A slow zoom into a photo of a cup of coffee."),
        "rocket_pan.avi": (pz(_photo("rocket", 128), "pan_down", 10, 64), None,
                           "A pan from top to bottom over a photo of a rocket at night."),
    }
    for name, (frames, audio, caption) in videos.items():
        mediaio.write_video(root / "video" / name, frames, 10, audio, sr if audio is not None else None)
        fates[f"video/{name}"] = "ok"
        put_text(f"video/{Path(name).stem}.txt", caption + "\n")

    channels = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
    series = _basic_motions(3)
    for (values, label), ext in zip(series, (".csv", ".parquet", ".npy")):
        mediaio.write_sensor(root / f"sensors/{label}{ext}", values, channels, 10.0, label)
        fates[f"sensors/{label}{ext}"] = fates[f"sensors/{label}.json"] = "ok"

    from pydoc_data.topics import topics

    for key in ("assert", "pass", "while"):
        put_text(f"text/{key}.txt", topics[key][:1500].strip() + "\n")

    records = [
        {"messages": [{"role": "user", "content": "What does a pass statement do?"},
                      {"role": "assistant", "content": "Nothing: it is a placeholder where a statement is required."}]},
        {"messages": [{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": "How does a while loop end?"},
                      {"role": "assistant", "content": "When its condition is false, or at a break statement."}]},
        {"text": "Python's assert statement checks a condition while debugging."},
    ]
    lines = [json.dumps(r) for r in records[:2]] + ['{"messages": [{"role": "user", "content": "unfinished'] \
        + [json.dumps(records[2])]
    put_text("chat/chat.jsonl", "\n".join(lines) + "\n")
    return {"jpg": (root / "images/coffee.jpg").read_bytes(), "mp4": (root / "video/cat_pan.mp4").read_bytes(),
            "wav": (root / "audio/clip0.wav").read_bytes(), "values": series[0][0].tobytes()}


def _basic_motions(n: int) -> list[tuple[np.ndarray, str]]:
    """The first recording of the first ``n`` distinct activities in BasicMotions' training split."""
    path = _pkg("sktime") / "datasets" / "data" / "BasicMotions" / "BasicMotions_TRAIN.ts"
    lines = path.read_text(encoding="utf-8").split("@data", 1)[1].split()
    out: dict[str, np.ndarray] = {}
    for line in lines:
        *dims, label = line.split(":")
        name = {"standing": "resting"}.get(label.lower(), label.lower())
        if name not in out and len(out) < n:
            out[name] = np.array([[float(v) for v in d.split(",")] for d in dims], np.float32).T
    return [(v, k) for k, v in out.items()]


def _broken(root: Path, fates: dict[str, str], payload: dict[str, bytes]) -> None:
    rng = np.random.default_rng(1234)
    b = root / "broken"
    b.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, str]] = {
        "truncated_photo.jpg": (payload["jpg"][: len(payload["jpg"]) // 2], "truncated"),
        "truncated_clip.mp4": (payload["mp4"][: len(payload["mp4"]) // 2], "truncated"),
        "empty_image.png": (b"", "empty"),
        "empty_sound.wav": (b"", "empty"),
        "empty_doc.txt": (b"", "empty"),
        "noise_image.jpg": (rng.bytes(3000), "random_bytes"),
        "noise_clip.mp4": (rng.bytes(3000), "random_bytes"),
        "noise_sound.flac": (rng.bytes(3000), "random_bytes"),
        "sound_named_png.png": (payload["wav"], "wrong_extension"),
        "latin1_doc.txt": ("Caf\u00e9 cr\u00e8me: na\u00efve r\u00e9sum\u00e9 of a document.\n".encode("latin-1"),
                           "invalid_utf8"),
        "bomb.png": (_bomb_png(), "bomb"),
    }
    for name, (data, kind) in files.items():
        (b / name).write_bytes(data)
        fates[f"broken/{name}"] = f"reject:{kind}"
    values = np.full((50, 3), np.nan, np.float32)
    mediaio.write_sensor(b / "nan_watch.csv", values, ("accel_x", "accel_y", "accel_z"), 10.0, "walking")
    fates["broken/nan_watch.csv"] = fates["broken/nan_watch.json"] = "reject:nan"
    rows = np.frombuffer(payload["values"], np.float32).reshape(-1, 6)[:50]
    text = "accel_x,accel_y,accel_z\n" + "".join(f"{r[0]:.6g},{r[1]:.6g},{r[2]:.6g}\n" for r in rows)
    (b / "no_rate_watch.csv").write_text(text, encoding="utf-8")
    fates["broken/no_rate_watch.csv"] = "reject:no_rate"


def make_mixed_corpus(root: Path, *, broken: bool = True) -> dict[str, str]:
    """Write the mixed corpus under ``root``; return ``{relpath (posix): "ok" | "reject:<kind>"}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fates: dict[str, str] = {}
    payload = _good(root, fates)
    if broken:
        _broken(root, fates, payload)
    return dict(sorted(fates.items()))


# Tiny tokenizers so fitting takes seconds; the layout and every stage are the demo's.
TINY_TOKENIZERS = {
    "text": {"family": "bpe", "params": {"vocab_size": 400}},
    "image": {"family": "fsq_image", "params": {"size": 32, "downsample": 8, "channels": 16, "steps": 30,
                                                "batch_size": 8}},
    "video": {"family": "frames"},
    "audio": {"family": "mel_fsq", "params": {"sample_rate": 16000, "steps": 20, "channels": 32, "batch_size": 4}},
    "sensor": {"family": "sensor_bins", "params": {"n_bins": 64}},
}


def tiny_recipe(base: Path, **overrides) -> Path:
    """The demo recipe with tiny tokenizers fitted under `base/toks`; top-level keys replaced by `overrides`."""
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml").read_text())
    demo.update(tokenizers=TINY_TOKENIZERS, tokenizers_dir=str(Path(base) / "toks"))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(demo.get(key), dict) and key != "tokenizers":
            demo[key] = {**demo[key], **value}
        else:
            demo[key] = value
    path = Path(base) / f"recipe-{len(list(Path(base).glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(demo))
    return path


def make_duplicates_corpus(root: Path) -> dict[str, str]:
    """Photos and documents with planted copies; returns {relpath of a copy: relpath of its original}.

    An exact copy under another name, a JPEG re-encode of a PNG photo, and a
    document with a few words changed; the other photos and documents are distinct.
    """
    from pydoc_data.topics import topics

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stem, caption in (("astronaut", "An astronaut in a white suit in front of a flag."),
                          ("coffee", "A cup of coffee on a red saucer."), ("chelsea", "A tabby cat."),
                          ("rocket", "A rocket on the launch pad."), ("motorcycle_left", "A red motorcycle.")):
        Image.fromarray(_photo(stem, 128)).convert("RGB").save(root / f"{stem}.png")
        (root / f"{stem}.txt").write_text(caption + "\n")
    (root / "astronaut_copy.png").write_bytes((root / "astronaut.png").read_bytes())
    (root / "astronaut_copy.txt").write_text("The same astronaut photo, saved again under another name.\n")
    Image.open(root / "coffee.png").save(root / "coffee_again.jpg", quality=90)
    (root / "coffee_again.txt").write_text("Coffee, re-encoded as a JPEG.\n")
    texts = [topics[k] for k in sorted(topics) if len(topics[k]) > 3000][:5]  # Python's own docs: real prose
    for i, text in enumerate(texts):
        (root / f"doc_{i}.md").write_text(text[:2500])
    words = texts[0][:2500].split(" ")
    for j in (10, 60, 120, 200, 300):
        words[j] = words[j].upper()
    (root / "doc_0_edited.md").write_text(" ".join(words))
    return {"astronaut_copy.png": "astronaut.png", "coffee_again.jpg": "coffee.png", "doc_0_edited.md": "doc_0.md"}


# img2dataset (webdataset output format): the photos it "downloaded", per shard; the last URL of each shard fails
IMG2DATASET_PHOTOS = (
    ("astronaut", "An astronaut in a white suit in front of a flag."),
    ("chelsea", "A close-up photo of a tabby cat with green eyes."),
    ("coffee", "A cup of coffee on a red saucer, on a wooden table."),
    ("rocket", "A rocket on the launch pad at night."),
    ("motorcycle_left", "A red motorcycle parked in a garage."),
    ("hubble_deep_field", "Thousands of galaxies in a deep field image from a space telescope."),
)
IMG2DATASET_FAILURES = (
    ("failed_to_download", "HTTP Error 404: Not Found"),
    ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>"),
    ("failed_to_resize", "image decoding error"),
)


def make_img2dataset_folder(path: Path, n_shards: int = 2, per_shard: int = 3, failed_per_shard: int = 1,
                            side: int = 64) -> dict:
    """An img2dataset output folder as `img2dataset --output_format webdataset --caption_col caption` leaves it.

    ``NNNNN.tar`` (members ``KEY.jpg``, ``KEY.txt`` caption, ``KEY.json`` metadata), ``NNNNN.parquet``
    (every attempted URL: url, caption, key, status, error_message, width, height, original_width,
    original_height, sha256) and ``NNNNN_stats.json`` (count, successes, failed_to_download,
    failed_to_resize, duration, status_dict). Keys are shard id (5 digits) + index (4 digits); the
    last `failed_per_shard` URLs of each shard fail. Returns {"ok": {"NNNNN.tar#KEY.jpg": caption},
    "failed": ["NNNNN.tar#KEY", ...], "metadata": [parquet and stats names], "tars": [...]}.
    """
    import hashlib
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    out: dict = {"ok": {}, "failed": [], "metadata": [], "tars": []}
    n = 0
    for shard in range(n_shards):
        name = f"{shard:05d}"
        rows, status_dict, downloaded = [], {}, 0
        with tarfile.open(path / f"{name}.tar", "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(per_shard + failed_per_shard):
                key = f"{shard:05d}{i:04d}"
                stem, caption = IMG2DATASET_PHOTOS[n % len(IMG2DATASET_PHOTOS)]
                url = f"https://images.example.org/{stem}-{n}.jpg"
                row = {"url": url, "caption": caption, "key": key, "status": "success", "error_message": None,
                       "width": None, "height": None, "original_width": None, "original_height": None,
                       "sha256": None}
                if i >= per_shard:
                    status, err = IMG2DATASET_FAILURES[(n + shard) % len(IMG2DATASET_FAILURES)]
                    row.update(status=status, error_message=err)
                    out["failed"].append(f"{name}.tar#{key}")
                else:
                    n += 1
                    photo = _photo(stem, 4 * side)
                    with Image.fromarray(photo).convert("RGB") as im:
                        original = im.size
                        im.thumbnail((side, side), Image.Resampling.LANCZOS)
                        buf = io.BytesIO()
                        im.save(buf, format="JPEG", quality=95)
                        size = im.size
                    jpg = buf.getvalue()
                    downloaded += len(jpg)
                    row.update(width=size[0], height=size[1], original_width=original[0],
                               original_height=original[1], sha256=hashlib.sha256(jpg).hexdigest())
                    meta = json.dumps(row, indent=4).encode()
                    for ext, data in ((".jpg", jpg), (".json", meta), (".txt", caption.encode())):
                        info = tarfile.TarInfo(key + ext)
                        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                        tf.addfile(info, io.BytesIO(data))
                    out["ok"][f"{name}.tar#{key}.jpg"] = caption
                what = "success" if row["status"] == "success" else row["error_message"]
                status_dict[what] = status_dict.get(what, 0) + 1
                rows.append(row)
        schema = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()),
                            ("status", pa.string()), ("error_message", pa.string()), ("width", pa.int64()),
                            ("height", pa.int64()), ("original_width", pa.int64()), ("original_height", pa.int64()),
                            ("sha256", pa.string())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / f"{name}.parquet")
        failed = [r["status"] for r in rows if r["status"] != "success"]
        stats = {"count": len(rows), "successes": len(rows) - len(failed),
                 "failed_to_download": failed.count("failed_to_download"),
                 "failed_to_resize": failed.count("failed_to_resize"), "duration": 1.25,
                 "bytes_downloaded": downloaded, "start_time": 1_700_000_000.0, "end_time": 1_700_000_001.25,
                 "status_dict": status_dict}
        (path / f"{name}_stats.json").write_text(json.dumps(stats, indent=4))
        out["metadata"] += [f"{name}.parquet", f"{name}_stats.json"]
        out["tars"].append(f"{name}.tar")
    return out


def raw_tar_header(name: bytes, size_field: bytes, flag: bytes = b"0", payload: bytes = b"") -> bytes:
    """One hand-made ustar header block (any size field, even one tarfile would never write),
    followed by `payload` padded to whole blocks."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = size_field
    block[156:157] = flag
    block[257:263] = b"ustar\0"
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + payload + b"\0" * (-len(payload) % 512)


def tiny_4k_clip(path: Path, frames: int = 41) -> Path:
    """A few KB of H.264 declaring 3840x2160 frames (black, at 10 fps): 1 GB of RGB at native size."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast", "crf": "51"})
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((2160, 3840, 3), np.uint8), format="rgb24")
        for i in range(frames):
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
