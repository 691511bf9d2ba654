"""A seeded mutation fuzzer over valid media of every kind, and the check that nothing it makes
crashes, hangs, blows up or goes missing.

Seeds: the mixed corpus (`corpus_factory.make_mixed_corpus`: PNG, JPEG, BMP, WebP, WAV, FLAC,
Ogg, MP3, MP4, WebM, AVI, CSV, Parquet and .npy sensors with their sidecars, text, chat .jsonl)
plus a raw WebDataset tar. Each mutant is one seed file changed one way, written under the seed's
own stem so it keeps its caption or sidecar (a mutated sidecar keeps its media):

    bitflip   1..64 random bits flipped
    truncate  cut at a random length (the first bytes, where headers live, are the likeliest)
    header    a field in the first 256 bytes overwritten with 0, 0xFF.., 0x7FFFFFFF or random bytes
    swap      another kind's bytes under this kind's extension (a container swap)
    splice    a random slice of the file repeated or deleted

`check` decodes every discovered unit the way a run does (`DecodeStage` in its watched child,
`pipeline.budget`) and reports what would be a bug: a unit whose decoding raised out of the stage
or killed its process (crash), one stopped by the wall or CPU budget (hang), one over the memory
budget (blow-up: a header claim the caps missed), and any input in no place or in two (lost).
Everything else is a reject with a reason, counted.

    python tests/hostile/fuzz.py OUT --per-seed 40 --seed 1   # write a corpus to look at
"""
from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

MUTATIONS = ("bitflip", "truncate", "header", "swap", "splice")
COMPANIONS = (".txt", ".json")  # a media file's caption and sidecar travel with it
BUGS = {"decoder_crashed": "crash", "decoder_error": None, "over_wall_budget": "hang",
        "over_cpu_budget": "hang", "over_memory_budget": "blow-up"}


def seeds(root: Path) -> Path:
    """The seed corpus under `root`: the mixed corpus, and a raw WebDataset tar of two samples."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from corpus_factory import make_mixed_corpus

    make_mixed_corpus(root, broken=False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in ("000000", "000001"):
            for ext, data in ((".png", (root / "images" / "chelsea.png").read_bytes()), (".txt", b"A cat.\n")):
                info = tarfile.TarInfo(key + ext)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "wds").mkdir(exist_ok=True)
    (root / "wds" / "shard.tar").write_bytes(buf.getvalue())
    return root


def mutate(data: bytes, others: list[bytes], rng: np.random.Generator) -> tuple[bytes, str]:
    how = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    b = bytearray(data)
    if how == "bitflip" and b:
        for pos in rng.integers(0, len(b) * 8, int(rng.integers(1, 65))):
            b[pos // 8] ^= 1 << (pos % 8)
    elif how == "truncate":
        cut = int(min(rng.exponential(256), len(b))) if rng.random() < 0.5 else int(rng.integers(0, len(b) + 1))
        b = b[:cut]
    elif how == "header" and b:
        at = int(rng.integers(0, min(256, len(b))))
        value = [b"\0\0\0\0", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", bytes(rng.integers(0, 256, 4, dtype=np.uint8))][
            int(rng.integers(4))]
        b[at:at + len(value)] = value
    elif how == "swap":
        b = bytearray(others[int(rng.integers(len(others)))])
    elif how == "splice" and b:
        lo = int(rng.integers(0, len(b)))
        hi = min(len(b), lo + int(rng.integers(1, 4096)))
        b = b[:lo] + b[lo:hi] * int(rng.integers(2, 6)) + b[hi:] if rng.random() < 0.5 else b[:lo] + b[hi:]
    return bytes(b), how


def write_corpus(seed_root: Path, out: Path, per_seed: int, seed: int = 0) -> dict[str, str]:
    """`per_seed` mutants of every seed file under `out`; returns {relpath of the mutant: mutation}.

    A mutant is written under a stem of its own with its group's other files unchanged: a mutated
    photo keeps its caption, a mutated caption or sidecar keeps its media."""
    rng = np.random.default_rng(seed)
    files = sorted(p for p in Path(seed_root).rglob("*") if p.is_file())
    data = {p: p.read_bytes() for p in files}
    made: dict[str, str] = {}
    for p in files:
        rel = p.relative_to(seed_root)
        group = [q for q in files if q.parent == p.parent and q.stem == p.stem and q != p]
        others = [d for q, d in data.items() if q.suffix != p.suffix and q.suffix not in COMPANIONS]
        for k in range(per_seed):
            stem = f"{rel.stem}__{p.suffix[1:]}{k:04d}"  # one stem per mutant: its group is its own
            mutant, how = mutate(data[p], others, rng)
            dest = out / rel.parent / (stem + p.suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(mutant)
            made[dest.relative_to(out).as_posix()] = how
            for q in group:
                shutil.copyfile(q, dest.with_suffix(q.suffix))
    return made


def check(root: Path, stage, watched) -> dict:
    """Decode everything under `root` as a run does; {"units", "inputs", "reasons", "bugs": [...]}."""
    import pyarrow as pa

    from dataengine.discover import discover

    found = discover([("fuzz", root)], max_file_bytes=stage.decode.max_file_bytes)
    rows, bugs = [], []
    for u in found.units:
        unit = u.to_row()
        try:
            produced = stage(pa.Table.from_pylist([unit]), run_unit=watched).to_pylist()
        except Exception as e:  # the stage must never raise
            bugs.append({"bug": "crash", "path": unit["media"], "detail": f"{type(e).__name__}: {e}"})
            continue
        if not produced:
            bugs.append({"bug": "lost", "path": unit["media"], "detail": "the unit produced no row"})
        for r in produced:
            kind = BUGS.get(r["reason"] or "")
            if kind:
                bugs.append({"bug": kind, "path": r["path"], "detail": r["detail"][:300]})
        rows += produced
    places = Counter(r["path"] for r in found.rejects)
    for r in rows:
        if r["status"] == "ok":
            places.update({lin["path"] for lin in json.loads(r["lineage"])})
        else:
            places[r["path"]] += 1
    files = {rel for _, rel in found.files}
    for rel in sorted(files):
        if places[rel] == 0 and not any(p.startswith(rel + "#") for p in places):
            bugs.append({"bug": "lost", "path": rel, "detail": "in no output lineage and no reject"})
        elif places[rel] > 1:
            bugs.append({"bug": "lost", "path": rel, "detail": f"in {places[rel]} places"})
    reasons = Counter("ok" if r["status"] == "ok" else r["reason"] for r in rows)
    reasons.update(r["reason"] for r in found.rejects)
    return {"units": len(found.units), "inputs": len(files), "reasons": dict(sorted(reasons.items())), "bugs": bugs}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-seed", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    base = Path(a.out)
    made = write_corpus(seeds(base / "seeds"), base / "fuzz", a.per_seed, a.seed)
    print(f"{len(made)} mutants under {base / 'fuzz'}: {dict(Counter(made.values()))}")
