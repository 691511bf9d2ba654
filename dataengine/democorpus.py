"""The demo corpus: a small, real, multimodal folder built from media that ships
inside installed packages (no download).

* ``images/``  scikit-image's sample pictures plus crops, mirrors and grey or
  small copies, each with a caption written for this project;
* ``audio/``   espeak-ng speaking sentences from Python's reference docs (with
  transcripts), or, without espeak-ng, pygame's recorded sound effects (with
  captions); WAV, FLAC, OGG and MP3;
* ``video/``   slow pans and zooms over the photos with a speech or sound track;
* ``sensors/`` the 80 BasicMotions smartwatch recordings shipped by sktime;
* ``text/``    sections of Python's ``pydoc_data`` topics as ``.txt``/``.md``;
* ``chat/instructions.jsonl`` instruction records built from those topics;
* ``images/illustrated.jsonl`` interleaved documents (MMC4 / OBELICS style): a
  few of the pictures above between paragraphs built from their captions,
  referenced by path relative to the corpus root (``images/chelsea.jpg``).

Files sharing a stem in one folder form one sample group (DESIGN, Inputs).
Every file written is input: provenance goes in the returned dict, not on disk.
The same seed on the same machine gives byte-identical files.
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image
from pydoc_data.topics import topics as pydoc_topics

from dataengine import mediaio
from dataengine.errors import RecipeError

from dataengine.demo_captions import (  # noqa: F401  (re-exported for tests)
    LOSSLESS, MOTIONS, PHOTOS, SENSOR_CHANNELS, SENSOR_LABELS, SOUNDS, SUBDIRS, VIDEO_PHOTOS,
)

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
Clip = tuple[str, str, np.ndarray, int]  # (stem or topic, transcript or caption, wave, sample rate)


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"the demo corpus needs the {name!r} package: pip install the project's dependencies")
    return Path(list(spec.submodule_search_locations)[0])


def _n(full: int, scale: float) -> int:
    return max(1, min(full, int(round(full * scale))))


def _load_photo(stem: str, max_side: int = 512) -> np.ndarray:
    path = next(p for p in sorted((_pkg_dir("skimage") / "data").glob(stem + ".*")) if p.suffix in (".png", ".jpg"))
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            bg = Image.new("RGB", im.size, "white")
            bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
            im = bg
        elif im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        if max(im.size) > max_side:
            im = im.resize(_fit(im.size, max_side), Image.Resampling.LANCZOS)
        return np.asarray(im)


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    return max(1, round(size[0] * side / max(size))), max(1, round(size[1] * side / max(size)))


def _small(arr: np.ndarray, side: int) -> np.ndarray:
    im = Image.fromarray(arr)
    return np.asarray(im.resize(_fit(im.size, side), Image.Resampling.LANCZOS)) if max(im.size) > side else arr


def _write_images(out: Path, rng: random.Random, n_photos: int) -> int:
    regions = {"top left": (0.0, 0.0), "top right": (1.0, 0.0), "centre": (0.5, 0.5),
               "bottom left": (0.0, 1.0), "bottom right": (1.0, 1.0)}
    count = 0
    for stem in sorted(PHOTOS)[:n_photos]:
        caption, short = PHOTOS[stem]
        img = _load_photo(stem)
        ext = ".png" if stem in LOSSLESS else ".jpg"
        name, (fx, fy) = rng.choice(sorted(regions.items()))
        frac = rng.choice((0.5, 0.6, 0.7))
        h, w = img.shape[:2]
        ch, cw = int(h * frac), int(w * frac)
        y0, x0 = int((h - ch) * fy), int((w - cw) * fx)
        if img.ndim == 3:
            third, third_cap = img.mean(axis=2).round().astype(np.uint8), "A black and white version of a picture"
        else:
            third, third_cap = _small(img, 96), "A small, low-resolution copy of a picture"
        samples = [
            (stem, img, caption),
            (f"{stem}_crop", _small(img[y0:y0 + ch, x0:x0 + cw], 256), f"A close crop of the {name} of a picture"),
            (f"{stem}_mirror", _small(img[:, ::-1], 256), caption[:-1] + ", mirrored left to right."),
            (f"{stem}_{'grey' if img.ndim == 3 else 'small'}", _small(third, 256), third_cap),
        ]
        for sstem, arr, cap in samples[: 1 + rng.choice((2, 3, 3))]:
            cap = cap if sstem == stem or sstem.endswith("_mirror") else f"{cap} of {short}."
            mediaio.write_image(out / f"{sstem}{ext}", arr, quality=88)
            (out / f"{sstem}.txt").write_text(cap + "\n", encoding="utf-8")
            count += 1
    return count


def _topics() -> dict[str, str]:
    return {k: pydoc_topics[k].replace("\r\n", "\n").strip() + "\n" for k in sorted(pydoc_topics)}


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of a topic: no headings, no indented code or grammar."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.startswith(" ") for line in lines) or re.fullmatch(r"[*=\-~^]+", lines[-1].strip() or "x"):
            continue
        out.append(" ".join(line.strip() for line in lines))
    return out


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", paragraph) if s]


_SPEAKABLE = re.compile(r"[A-Za-z0-9 ,;'\"\-]+\.")


def _speakable(topics: dict[str, str], max_words: int) -> list[tuple[str, str]]:
    """(topic, one or two adjacent sentences) that read cleanly aloud."""
    out = []
    for key, text in topics.items():
        for para in _paragraphs(text):
            sents = [s for s in _sentences(para) if _SPEAKABLE.fullmatch(s) and "e.g" not in s and "i.e" not in s]
            for i, s in enumerate(sents):
                if 5 <= len(s.split()) <= max_words:
                    out.append((key, s))
                if i + 1 < len(sents) and len((s + " " + sents[i + 1]).split()) <= max_words:
                    out.append((key, s + " " + sents[i + 1]))
    return out


def _standalone(paragraph: str) -> str:
    """A paragraph that reads alone: one that leads into a code block ("... is equivalent to:")
    gives "", one that ends in a colon otherwise gets a full stop."""
    if not paragraph.endswith(":"):
        return paragraph
    if re.search(r"\b(to|as|follows|following|example|below|is|are|form|like|this)\s*:$", paragraph):
        return ""
    return paragraph[:-1] + "."


def _chunks(text: str, cap: int = 4000) -> list[str]:
    """Split a topic at paragraph boundaries into pieces of at most ``cap`` characters."""
    out, cur = [], ""
    for para in text.split("\n\n"):
        para = para[:cap].rsplit("\n", 1)[0] if len(para) > cap else para
        if cur and len(cur) + len(para) + 2 > cap:
            out.append(cur.strip() + "\n")
            cur = para
        else:
            cur = f"{cur}\n\n{para}" if cur else para
    if cur.strip():
        out.append(cur.strip() + "\n")
    return out


def _markdown(text: str) -> str:
    marks = {"*": "#", "=": "##", "-": "###", "~": "####", "^": "####"}
    lines, out = text.split("\n"), []
    for i, line in enumerate(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if re.fullmatch(r"[*=\-~^]{3,}", line.strip()) and out and out[-1].strip():
            continue
        if nxt and re.fullmatch(r"[*=\-~^]{3,}", nxt) and line.strip() and len(nxt) >= len(line.strip()):
            line = f"{marks[nxt[0]]} {line.strip()}"
        out.append(line)
    return "\n".join(out)


def _write_text(out: Path, topics: dict[str, str], n_docs: int) -> int:
    per_topic = {k: _chunks(v) for k, v in topics.items() if len(v) >= 600}
    picked: list[tuple[str, int, str]] = []
    depth = 0
    while len(picked) < n_docs and any(len(c) > depth for c in per_topic.values()):
        picked += [(k, depth, c[depth]) for k, c in per_topic.items() if len(c) > depth]
        depth += 1
    for i, (key, part, body) in enumerate(sorted(picked[:n_docs])):
        stem = key if len(per_topic[key]) == 1 else f"{key}_part{part + 1}"
        if i % 5 == 4:
            (out / f"{stem}.md").write_text(_markdown(body), encoding="utf-8")
        else:
            (out / f"{stem}.txt").write_text(body, encoding="utf-8")
    return min(n_docs, len(picked))


def _write_chat(path: Path, topics: dict[str, str], rng: random.Random, n_records: int) -> int:
    system = "You explain the Python language reference in plain, brief English."
    records: list[dict[str, Any]] = []

    def add(*turns: tuple[str, str]) -> None:
        records.append({"messages": [{"role": r, "content": c} for r, c in turns]})

    for key, text in topics.items():
        paras = [_standalone(p) for p in _paragraphs(text)[:4] if len(p.split()) >= 8]
        paras = [p for p in paras if p]
        if not paras:
            continue
        title, first = text.split("\n", 1)[0].strip(), paras[0]
        inline = "the" + title[3:] if title.startswith("The ") else title  # mid-sentence form
        brief = " ".join(_sentences(first)[:2])
        u, a = "user", "assistant"
        add((u, f"What does the Python topic '{key}' cover?"), (a, first))
        add((u, f"Summarise the reference section \"{title}\" for me."), (a, brief))
        add(("system", system), (u, f"In a sentence or two, what does the section on {inline} say?"), (a, brief))
        add((u, f"Which heading does the topic '{key}' sit under?"), (a, f"It is documented under \"{title}\"."))
        if len(paras) > 1:
            add((u, f"I'm reading about {inline}. What is the gist?"), (a, brief),
                (u, "Go on, tell me a bit more."), (a, paras[1]))
        grammar = [b.strip("\n") for b in text.split("\n\n") if "::=" in b]
        if grammar:
            add((u, f"Show me the grammar rule for {inline}."), (a, "Here it is:\n\n" + grammar[0]))
    n_text = max(1, n_records // 20)
    chosen = rng.sample(records, min(n_records - n_text, len(records)))
    prose = [p for v in topics.values() for p in _paragraphs(v) if len(p.split()) >= 40]
    chosen += [{"text": p} for p in rng.sample(prose, min(n_text, len(prose)))]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
    return len(chosen)


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1).astype(np.float32), int(sr)


def _spoken(items: list[tuple[str, str]], n: int, max_s: float, tmp: Path) -> list[Clip]:
    """Speak candidate sentences in order until ``n`` of them last under ``max_s``."""
    out: list[Clip] = []
    for key, sentence in items:
        if len(out) >= n:
            break
        if sum(o[0] == key for o in out) >= 2 or sentence[0].isdigit():
            continue  # at most two per topic; no list items ("6. The suite ...")
        wav = tmp / f"say{len(out)}.wav"
        mediaio.speak(sentence, wav)
        wave, sr = _read_wave(wav)
        if len(wave) / sr < max_s:
            out.append((key, sentence, wave, sr))
    return out


def _sound_clips(rng: random.Random) -> list[Clip]:
    """pygame's sounds, plus deterministic quieter, reversed and excerpted variants."""
    data = _pkg_dir("pygame") / "examples" / "data"
    clips = []
    for name, what in SOUNDS.items():
        wave, sr = _read_wave(data / f"{name}.wav")
        clips.append((name, f"The sound of {what}.", wave, sr))
        gain = rng.choice((0.3, 0.5))
        clips.append((f"{name}_quiet", f"A quieter recording of {what}.", wave * gain, sr))
        clips.append((f"{name}_reversed", f"The sound of {what}, played backwards.", wave[::-1].copy(), sr))
        seg = int(1.5 * sr)
        for j in range(min(4, len(wave) // seg) if len(wave) > 2.5 * sr else 0):
            clips.append((f"{name}_part{j + 1}", f"A short excerpt of {what}.", wave[j * seg:(j + 1) * seg], sr))
    return clips


def _audio_clips(topics: dict[str, str], speech: bool, rng: random.Random, n_audio: int,
                 n_video: int) -> tuple[list[Clip], list[Clip]]:
    """Audio samples, and video tracks (under 4 s, captioned as a phrase)."""
    if not speech:
        pool = _sound_clips(rng)
        rng.shuffle(pool)
        short = [c for c in pool if len(c[2]) / c[3] <= 4.0]
        bases = [c[0].split("_")[0] for c in short]  # one clip of each sound first, then repeats
        order = sorted(range(len(short)), key=lambda i: (bases[:i].count(bases[i]), i))
        tracks = [(c[0], c[1][0].lower() + c[1][1:-1] + ".", c[2], c[3]) for c in (short[i] for i in order)]
        return sorted(pool[:n_audio], key=lambda c: c[0]), tracks
    with tempfile.TemporaryDirectory(prefix="dataengine-say-") as tmp:
        cands = _speakable(topics, 22)
        rng.shuffle(cands)
        clips = _spoken(cands, n_audio, 8.0, Path(tmp))
        used = {c[1] for c in clips}
        cands = [c for c in _speakable(topics, 9) if c[1] not in used]
        rng.shuffle(cands)
        tracks = [(k, f"a spoken sentence: \"{t}\"", w, sr) for k, t, w, sr in _spoken(cands, n_video, 3.7, Path(tmp))]
    return [(f"{i:02d}_{k}", t, w, sr) for i, (k, t, w, sr) in enumerate(clips)], tracks


def _write_videos(out: Path, rng: random.Random, tracks: list[Clip], n: int) -> int:
    fps = 10
    for i, (photo, (_stem, what, wave, sr)) in enumerate(zip(VIDEO_PHOTOS[:n], tracks)):
        motion = rng.choice(sorted(MOTIONS))
        seconds = float(min(4.0, max(2.0, len(wave) / sr + 0.3)))
        n_frames = int(round(seconds * fps))
        audio = np.zeros(int(round(seconds * sr)), np.float32)
        audio[: min(len(wave), len(audio))] = wave[: len(audio)]
        ext = ".webm" if i == n - 1 and n > 1 else ".mp4"
        stem = f"{photo}_{motion}"
        frames = mediaio.pan_zoom_frames(_load_photo(photo), motion, n_frames)
        mediaio.write_video(out / f"{stem}{ext}", frames, fps, audio, sr)
        caption = f"{MOTIONS[motion]} a photo of {PHOTOS[photo][1]}, with {what}"
        (out / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    return min(n, len(tracks))


def _read_ts(path: Path) -> list[tuple[np.ndarray, str]]:
    """Parse a .ts file of equal-length multivariate series: [(values_TC, label)]."""
    rows, in_data = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            rows.append((np.array([[float(v) for v in d.split(",")] for d in dims], np.float32).T, label))
    return rows


def _write_sensors(out: Path, n: int) -> int:
    base = _pkg_dir("sktime") / "datasets" / "data" / "BasicMotions"
    count = 0
    for split in ("train", "test"):
        for j, (values, label) in enumerate(_read_ts(base / f"BasicMotions_{split.upper()}.ts")):
            if count >= n:
                return count
            ext = ".parquet" if count % 10 in (3, 7) else ".npy" if count % 10 == 5 else ".csv"
            name = SENSOR_LABELS.get(label.lower(), label.lower())
            mediaio.write_sensor(out / f"{name}_{split}_{j:02d}{ext}", values, SENSOR_CHANNELS, 10.0, name)
            count += 1
    return count


ORDINALS = ("first", "second", "third", "fourth")


def _write_interleaved(path: Path, rng: random.Random, n_docs: int) -> int:
    """Illustrated documents over the pictures already written beside `path` (their captions as text)."""
    pictures = sorted(p for p in path.parent.iterdir() if p.suffix in (".jpg", ".png"))
    if not pictures:
        return 0
    lines = []
    for _ in range(n_docs):
        picks = rng.sample(pictures, min(rng.choice((2, 3)), len(pictures)))
        text = f"An illustrated page with {len(picks)} pictures, each described after it is shown. The first one:"
        segments: list[dict[str, str]] = []
        for j, pic in enumerate(picks):
            segments += [{"text": text}, {"image": f"{path.parent.name}/{pic.name}"}]
            caption = pic.with_suffix(".txt").read_text(encoding="utf-8").strip()
            after = f"The {ORDINALS[j + 1]} one:" if j + 1 < len(picks) else "That is the last picture on this page."
            text = f"{caption} {after}"
        segments.append({"text": text})
        lines.append(json.dumps({"interleaved": segments}, ensure_ascii=False))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def write_demo_corpus(out: Path, *, speech: bool | None = None, seed: int = 0, scale: float = 1.0,
                      overwrite: bool = False) -> dict[str, Any]:
    """Write the demo corpus under ``out`` and return counts and provenance.

    ``speech``: speak transcripts with espeak-ng (default: when it is installed),
    else use pygame's recorded sounds with captions. ``scale`` (0, 1] shrinks
    every count (for tests). ``overwrite`` replaces the corpus sub-folders of
    a non-empty ``out``; without it a non-empty ``out`` is refused.
    """
    out = Path(out)
    if not 0 < scale <= 1:
        raise RecipeError(f"scale must be in (0, 1], got {scale}")
    if speech is None:
        speech = mediaio.has_espeak()
    elif speech and not mediaio.has_espeak():
        raise RecipeError("speech=True needs espeak-ng: apt-get install espeak-ng, or pass speech=False")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RecipeError(f"{out} is not empty: pick an empty folder or pass overwrite=True")
        for sub in SUBDIRS:
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    topics = _topics()
    counts = {"image": _write_images(out / "images", random.Random(seed), _n(len(PHOTOS), scale))}
    rng = random.Random(seed + 1)
    n_audio, n_video = _n(24, scale), _n(len(VIDEO_PHOTOS), scale)
    clips, tracks = _audio_clips(topics, speech, rng, n_audio, n_video)
    for i, (stem, text, wave, sr) in enumerate(clips):
        mediaio.write_audio(out / "audio" / f"{stem}{AUDIO_EXTS[i % 4]}", wave, sr)
        (out / "audio" / f"{stem}.txt").write_text(text + "\n", encoding="utf-8")
    counts["audio"] = len(clips)
    counts["video"] = _write_videos(out / "video", rng, tracks, n_video)
    counts["sensor"] = _write_sensors(out / "sensors", _n(80, scale))
    counts["text"] = _write_text(out / "text", topics, _n(120, scale))
    counts["chat"] = _write_chat(out / "chat" / "instructions.jsonl", topics, random.Random(seed + 2), _n(150, scale))
    counts["interleaved"] = _write_interleaved(out / "images" / "illustrated.jsonl", random.Random(seed + 3),
                                               _n(16, scale))
    files = [p for p in out.rglob("*") if p.is_file()]
    return {
        "counts": counts,
        "audio_source": "espeak-ng" if speech else "pygame",
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seed": seed,
        "scale": scale,
        "provenance": {
            "images": "scikit-image sample data (skimage/data); captions written for dataengine",
            "audio": ("espeak-ng speaking sentences of Python's pydoc_data topics" if speech
                      else "pygame example sounds (pygame/examples/data); captions written for dataengine"),
            "video": "pans and zooms over scikit-image photos, with the audio source above",
            "sensors": "BasicMotions smartwatch recordings shipped by sktime (10 Hz, 6 channels)",
            "text": "Python's pydoc_data.topics (the language reference)",
            "chat": "templates written for dataengine over pydoc_data.topics",
            "interleaved": "the scikit-image pictures above between their captions, by dataengine",
        },
    }
