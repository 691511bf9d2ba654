"""Dedup in token space: exact (content hash) and near (MinHash + LSH over token n-grams).

    rows ─► exact: equal (kind, content_hash) ─► one survivor per hash
         ─► near, per kind, among the survivors: shingles of the row's content tokens
             (media kinds: codes inside image/video/audio/sensor spans, captions ignored;
              text/chat/interleaved: codes inside text spans; an interleaved record's
              shingles salted by a fingerprint of its media codes, so the same text
              with other pictures is not a duplicate) ─► MinHash ─► LSH candidates
             ─► verified by estimated Jaccard >= threshold ─► connected components
         ─► keep per cluster: highest `quality` (None/NaN -> 0), then smallest id

Every dropped row names its kept twin and the estimated Jaccard. Calibration of the
defaults (fitted fsq_image at 400 steps on scikit-image photos; BPE on prose) is in
`tests/curate/test_dedup.py` and the engineer's report:
  images, 2-grams of codes: JPEG q75..90 re-encodes J >= 0.77 (median 1.0); different
  photos J <= 0.10; 75..90% crops J <= 0.32. Text, 5-grams of BPE tokens: a ~2 KB
  document with a few words changed J ~ 0.8-0.9; different paragraphs J ~ 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataengine import modalities
from dataengine.config import build
from dataengine.curate import minhash
from dataengine.errors import RecipeError

TEXT_KINDS = modalities.get(modalities.TEXT).all_kinds()  # content = text spans: text, chat, interleaved
MEDIA_MODALITIES = tuple(m.name for m in modalities.media())  # content of every other kind
REQUIRED_COLUMNS = ("id", "kind", "content_hash", "quality", "tokens", "spans")

# Per kind, each modality's own choice (see its module): 2-grams for media codes (a grid/frame code
# sequence is short and a re-encode flips a few codes, each flip costing n shingles: re-encodes stay at
# J >= 0.77 while crops and other photos stay <= 0.32), 5-grams for BPE text (the usual word-ish
# shingle). Thresholds on estimated Jaccard: 0.5 mid-gap for media, 0.7 the customary text level.
DEFAULT_NGRAM = {k: m.ngram for m in modalities.registry().values() for k in m.all_kinds()}
DEFAULT_THRESHOLD = {k: m.threshold for m in modalities.registry().values() for k in m.all_kinds()}


@dataclass
class DedupConfig:
    """How to find duplicates. Keys of `ngram` / `threshold` are row kinds."""

    exact: bool = True                     # equal content_hash (same kind) -> one cluster
    near: bool = True                      # MinHash + LSH near-duplicates
    ngram: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_NGRAM), metadata={"merge": True})
    threshold: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLD), metadata={"merge": True})
    num_perm: int = 128                    # std of a Jaccard estimate ~ sqrt(J(1-J)/128) <= 0.045
    lsh_margin: float = 0.15               # LSH S-curve midpoint = threshold - margin: pairs at the
    #                                        threshold become candidates with probability >= ~0.95
    bands: int | None = None               # override the derived (bands, rows); both or neither
    rows: int | None = None
    max_partners: int = 64                 # pairs per row inside one LSH bucket (see minhash.candidate_pairs)
    hash_family: str = "multiply_shift"    # or "mod_prime" (see minhash.MinHasher)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> "DedupConfig":
        return build(cls, d, "dedup")  # a partial ngram / threshold overrides the defaults kind by kind

    def validate(self) -> None:
        if self.num_perm < 8:
            raise RecipeError(f"dedup.num_perm={self.num_perm} is too small; use 64..256 (128 is the default)")
        for kind, n in self.ngram.items():
            if not isinstance(n, int) or n < 1:
                raise RecipeError(f"dedup.ngram[{kind!r}]={n!r}: n-gram sizes are integers >= 1")
        for kind, t in self.threshold.items():
            if not 0.0 < float(t) <= 1.0:
                raise RecipeError(f"dedup.threshold[{kind!r}]={t!r}: use an estimated Jaccard in (0, 1]")
        if sorted(self.ngram) != sorted(self.threshold):
            raise RecipeError(f"dedup: ngram kinds {sorted(self.ngram)} and threshold kinds "
                              f"{sorted(self.threshold)} differ; give both for every kind")
        if (self.bands is None) != (self.rows is None):
            raise RecipeError("dedup: set both bands and rows, or neither (they are derived from threshold)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise RecipeError(f"dedup: bands*rows = {self.bands}*{self.rows} must be >= 1 and <= num_perm "
                              f"({self.num_perm})")
        if self.hash_family not in minhash.MinHasher.FAMILIES:
            raise RecipeError(f"dedup.hash_family={self.hash_family!r}; use one of {minhash.MinHasher.FAMILIES}")
        if not 0.0 <= self.lsh_margin < 1.0 or self.max_partners < 1:
            raise RecipeError("dedup: lsh_margin must be in [0, 1) and max_partners >= 1")

    def banding(self, kind: str) -> tuple[int, int]:
        """(bands, rows) for `kind`: the override, else derived from threshold - lsh_margin."""
        if self.bands is not None:
            return self.bands, self.rows  # type: ignore[return-value]
        t = min(max(self.threshold[kind] - self.lsh_margin, 0.05), 0.95)
        return minhash.lsh_params(t, self.num_perm)


@dataclass
class DedupResult:
    cluster: pl.DataFrame   # id, cluster (= the kept id of the row's cluster; itself when kept)
    drops: pl.DataFrame     # id, reason, detail, kept_id, jaccard
    summary: dict           # for stats.json


def dedup(df: pl.DataFrame, config: DedupConfig | None = None) -> DedupResult:
    """Cluster duplicates in `df` (columns REQUIRED_COLUMNS) and choose one survivor per cluster."""
    config = config or DedupConfig()
    config.validate()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"dedup needs columns {list(REQUIRED_COLUMNS)}; missing {missing}")
    n = df.height
    if df["id"].n_unique() != n or df["id"].null_count():
        raise ValueError("dedup: ids must be unique and non-null")
    base = pl.DataFrame({
        "_row": np.arange(n, dtype=np.int64),
        "id": df["id"].cast(pl.String),
        "kind": df["kind"].cast(pl.String).fill_null(""),
        "content_hash": df["content_hash"].cast(pl.String).fill_null(""),
        "quality": df["quality"].cast(pl.Float64).fill_nan(0.0).fill_null(0.0),
    })
    unknown = sorted(set(base["kind"].unique().to_list()) - set(config.ngram) - {""})
    if config.near and unknown:
        raise RecipeError(f"dedup: no n-gram size for kind(s) {unknown}; add them to dedup.ngram and "
                          f"dedup.threshold (known kinds: {sorted(config.ngram)})")
    # keep order: quality descending, then id ascending (Polars sorts strings by code point)
    rank = base.sort(["quality", "id"], descending=[True, False])["_row"].to_numpy()
    order = np.empty(n, dtype=np.int64)
    order[rank] = np.arange(n)              # order[r]: position of row r in the keep order

    base = base.with_columns(_ord=pl.Series(order))
    exact_rep = _exact(base) if config.exact else np.arange(n)
    survivors = np.flatnonzero(exact_rep == np.arange(n))
    near_rep, jacc_to_rep, kind_stats = np.arange(n), np.ones(n), {}
    if config.near and n:
        near_rep, jacc_to_rep, kind_stats = _near(df, base, survivors, order, config)
    kept = near_rep[exact_rep]                # final survivor of every row's cluster
    ids = base["id"].to_numpy()
    cluster = pl.DataFrame({"id": ids, "cluster": ids[kept]})
    drops = _drops(base, ids, exact_rep, kept, jacc_to_rep, config)
    return DedupResult(cluster, drops, _summary(base, kept, drops, kind_stats, config))


def _exact(base: pl.DataFrame) -> np.ndarray:
    """Row index of the exact-duplicate survivor of every row (itself when unique or unhashed)."""
    rep = np.arange(base.height)
    hashed = base.filter(pl.col("content_hash") != "")
    if hashed.height:
        firsts = hashed.sort("_ord").with_columns(_rep=pl.col("_row").first().over(["kind", "content_hash"]))
        rep[firsts["_row"].to_numpy()] = firsts["_rep"].to_numpy()
    return rep


def _list_parts(col: pl.Series) -> tuple[np.ndarray, pa.Array]:
    """(lengths per row, flattened values) of a list column; null lists count as empty."""
    arr = col.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths, arr.flatten()


def content_segments(df: pl.DataFrame, base: pl.DataFrame, media_of: tuple[str, ...] = ()):
    """Content segments of every row: (flat tokens, seg_row, seg_flat_start, seg_len), in row order.

    `media_of`: kinds whose media segments are wanted instead (and no segment of any other row)."""
    tok_len, flat = _list_parts(df["tokens"])
    tokens = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    tok_off = np.cumsum(tok_len) - tok_len
    span_len, spans = _list_parts(df["spans"])
    span_row = np.repeat(np.arange(df.height), span_len)
    if len(spans) == 0:
        z = np.zeros(0, np.int64)
        return tokens, z, z, z
    modality = spans.field("modality").to_numpy(zero_copy_only=False).astype(str)
    start = spans.field("start").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    end = spans.field("end").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if media_of:
        want = np.isin(base["kind"].to_numpy().astype(str), media_of)[span_row] & np.isin(modality, MEDIA_MODALITIES)
    else:
        is_text_row = np.isin(base["kind"].to_numpy().astype(str), TEXT_KINDS)[span_row]
        want = np.where(is_text_row, modality == "text", np.isin(modality, MEDIA_MODALITIES))
    start = np.clip(start, 0, tok_len[span_row])
    end = np.clip(end, start, tok_len[span_row])
    keep = want & (end > start)
    return tokens, span_row[keep], (tok_off[span_row] + start)[keep], (end - start)[keep]


SALTED_KINDS = ("interleaved",)  # text kinds whose media must match too


def media_salts(df: pl.DataFrame, base: pl.DataFrame) -> np.ndarray:
    """uint64 per row: a fingerprint of the codes of an interleaved record's media segments, in order
    (0: no media, or another kind). Records that differ in any media code get unrelated shingles."""
    salt = np.zeros(df.height, np.uint64)
    if not np.isin(base["kind"].to_numpy().astype(str), SALTED_KINDS).any():
        return salt  # the common case: no interleaved row, no second pass over the tokens
    tokens, seg_row, seg_start, seg_len = content_segments(df, base, media_of=SALTED_KINDS)
    if not len(seg_len):
        return salt
    row_of = np.repeat(seg_row, seg_len)
    values = tokens[np.repeat(seg_start, seg_len) + minhash._ragged_arange(seg_len)].astype(np.uint64)
    per_row = np.bincount(seg_row, weights=seg_len, minlength=df.height).astype(np.int64)
    pos = minhash._ragged_arange(per_row[per_row > 0]).astype(np.uint64)  # place in the row's media codes
    np.add.at(salt, row_of, minhash.fmix64((values + np.uint64(1)) ^ minhash.fmix64(pos + np.uint64(1))))
    has = per_row > 0
    salt[has] = minhash.fmix64(salt[has] ^ per_row[has].astype(np.uint64)) | np.uint64(1)  # never 0
    return salt


def salt_shingles(hashes: np.ndarray, seg_counts: np.ndarray, seg_salt: np.ndarray) -> np.ndarray:
    """Shingle hashes mixed with their row's salt (unchanged where the salt is 0)."""
    salt = np.repeat(seg_salt, seg_counts)
    return np.where(salt != 0, minhash.fmix64(hashes ^ salt), hashes)


def _near(df, base, survivors, order, config):
    """Near-duplicate survivor (row index) and estimated Jaccard to it, for every row; stats per kind."""
    n = base.height
    rep, jacc = np.arange(n), np.ones(n)
    tokens, seg_row, seg_start, seg_len = content_segments(df, base)
    salts = media_salts(df, base)
    kinds = base["kind"].to_numpy().astype(str)
    hasher = minhash.MinHasher(config.num_perm, config.seed, config.hash_family)
    stats = {}
    for kind in sorted(set(kinds[survivors]) - {""}):   # one pass per kind; rows compared within a kind
        rows = survivors[kinds[survivors] == kind]
        local = np.full(n, -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        sel = local[seg_row] >= 0
        lens = seg_len[sel]
        values = tokens[np.repeat(seg_start[sel], lens) + minhash._ragged_arange(lens)]
        hashes, seg_counts = minhash.shingle_hashes(values, lens, config.ngram[kind])
        hashes = salt_shingles(hashes, seg_counts, salts[seg_row[sel]])
        counts = np.bincount(local[seg_row[sel]], weights=seg_counts, minlength=len(rows)).astype(np.int64)
        has = np.flatnonzero(counts > 0)            # rows with content; the rest are never near-dups
        sig = hasher.signatures(hashes, counts)[has]
        bands, rws = config.banding(kind)
        i, j = minhash.candidate_pairs(minhash.band_keys(sig, bands, rws), config.max_partners)
        est = minhash.agreement(sig, i, j)
        ok = est >= config.threshold[kind]
        comp = minhash.components(len(has), i[ok], j[ok])
        # survivor per component: the member first in the keep order
        member_rows = rows[has]
        best = pl.DataFrame({"comp": comp, "ord": order[member_rows], "k": np.arange(len(has))}) \
            .sort("ord").group_by("comp", maintain_order=True).agg(pl.col("k").first())
        comp_best = np.empty(comp.max() + 1 if len(comp) else 0, dtype=np.int64)
        comp_best[best["comp"].to_numpy()] = best["k"].to_numpy()
        best_k = comp_best[comp]
        rep[member_rows] = member_rows[best_k]
        jacc[member_rows] = minhash.agreement(sig, np.arange(len(has)), best_k)
        sizes = np.bincount(comp)
        stats[kind] = {"ngram": config.ngram[kind], "threshold": config.threshold[kind], "bands": bands,
                       "rows_per_band": rws, "no_content": int(len(rows) - len(has)),
                       "candidate_pairs": int(len(i)), "verified_pairs": int(ok.sum()),
                       "near_clusters": int((sizes > 1).sum())}
    return rep, jacc, stats


def _drops(base, ids, exact_rep, kept, jacc, config) -> pl.DataFrame:
    rows = np.flatnonzero(kept != np.arange(len(kept)))
    is_exact = exact_rep[rows] != rows
    twin = exact_rep[rows]
    hashes = base["content_hash"].to_numpy().astype(str)
    kinds = base["kind"].to_numpy().astype(str)
    details, jaccards = [], []
    for r, ex, tw in zip(rows.tolist(), is_exact.tolist(), twin.tolist()):  # one string per dropped row
        k = ids[kept[r]]
        if ex and kept[r] == tw:
            details.append(f"identical content (content_hash {hashes[r][:16]}) to kept id {k}")
            jaccards.append(1.0)
        elif ex:
            details.append(f"identical content (content_hash {hashes[r][:16]}) to {ids[tw]}, a near-duplicate "
                           f"of kept id {k} (estimated Jaccard {jacc[tw]:.3f})")
            jaccards.append(float(jacc[tw]))
        else:
            details.append(f"near-duplicate of kept id {k}: estimated Jaccard {jacc[r]:.3f} over "
                           f"{kinds[r]} token {config.ngram.get(kinds[r])}-grams")
            jaccards.append(float(jacc[r]))
    return pl.DataFrame({
        "id": ids[rows].astype(str) if len(rows) else np.zeros(0, str),
        "reason": np.where(is_exact, "exact_duplicate", "near_duplicate").astype(str),
        "detail": details,
        "kept_id": ids[kept[rows]].astype(str) if len(rows) else np.zeros(0, str),
        "jaccard": np.asarray(jaccards, dtype=np.float64),
    }, schema={"id": pl.String, "reason": pl.String, "detail": pl.String, "kept_id": pl.String,
               "jaccard": pl.Float64})


def _summary(base, kept, drops, kind_stats, config) -> dict:
    ids = base["id"].to_numpy()
    sizes = pl.DataFrame({"kept_id": ids[kept], "kind": base["kind"]}).group_by("kept_id").agg(
        pl.len().alias("size"), pl.col("kind").first()).filter(pl.col("size") > 1)
    top = sizes.sort(["size", "kept_id"], descending=[True, False]).head(10)
    by_kind = {}
    drop_kind = drops.join(base.select("id", "kind"), on="id", how="left")
    for kind in sorted(set(base["kind"].to_list())):
        total = int((base["kind"] == kind).sum())
        dk = drop_kind.filter(pl.col("kind") == kind)
        by_kind[kind or "unknown"] = {
            "rows": total, "kept": total - dk.height,
            "exact_duplicate": int((dk["reason"] == "exact_duplicate").sum()),
            "near_duplicate": int((dk["reason"] == "near_duplicate").sum()),
            **kind_stats.get(kind, {}),
        }
    return {
        "rows": int(base.height),
        "kept": int(base.height - drops.height),
        "dropped": {"exact_duplicate": int((drops["reason"] == "exact_duplicate").sum()),
                    "near_duplicate": int((drops["reason"] == "near_duplicate").sum())},
        "clusters": int(sizes.height),           # clusters with more than one member
        "largest_clusters": [{"kept_id": r["kept_id"], "kind": r["kind"], "size": int(r["size"])}
                             for r in top.iter_rows(named=True)],
        "by_kind": by_kind,
        "config": {k: v for k, v in asdict(config).items()},
    }
