"""MinHash + LSH over token n-grams, vectorised in NumPy (the engine of `dedup.py`).

    token segments ─► n-gram shingles (uint64, multiply-xorshift mix)
        ─► signature[k] = min over shingles of h_k(shingle), h_k from a universal family
           (multiply-add-shift by default, or (a_k x + b_k) mod (2**31 - 1); see MinHasher)
        ─► LSH: `bands` bands of `rows` signature values, each band hashed to a uint64 bucket key
        ─► candidate pairs (rows sharing a bucket in any band) ─► verified by signature agreement
        ─► connected components

Loops run over n (the n-gram size), over signature blocks and over bucket offsets,
never over tokens, shingles or hash functions. Every function is pure and
deterministic given its seed, so a rerun finds the same clusters.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PRIME = np.uint64((1 << 31) - 1)       # Mersenne prime 2**31 - 1: a*x + b < 2**62 never overflows uint64
EMPTY = np.uint32((1 << 32) - 1)       # signature value of a row with no shingles (> any real value)
_MIX = np.uint64(0x9E3779B97F4A7C15)   # golden-ratio multiplier for the n-gram / band combiner
_BLOCK = 1 << 12                       # shingles per signature block: 128 perms x 4k x 8 B = 4 MiB (cache-sized)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (xorshift-multiply), elementwise on uint64 (wrapping)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(c) for each c in counts (int64)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def shingle_hashes(values: np.ndarray, seg_lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hashes of every n-gram inside each segment, and the number of shingles per segment.

    `values` is the concatenation of the segments (non-negative ints), `seg_lengths`
    their lengths. N-grams never cross a segment boundary; a segment shorter than n
    (but not empty) is one shingle of its own. Returns (hashes[S], counts[num_segments]).
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1; got {n}")
    lengths = np.asarray(seg_lengths, dtype=np.int64)
    vals = np.asarray(values).astype(np.uint64) + np.uint64(1)  # 0 is the pad after each segment
    padded = lengths + (n - 1)
    pstart = np.cumsum(padded) - padded
    buf = np.zeros(int(padded.sum()), dtype=np.uint64)
    buf[np.repeat(pstart, lengths) + _ragged_arange(lengths)] = vals
    m = max(len(buf) - n + 1, 0)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):  # a loop over the n positions of a window, vectorised over every window
        h = (h ^ buf[j : j + m]) * _MIX
    counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
    starts = np.repeat(pstart, counts) + _ragged_arange(counts)
    return fmix64(h[starts] ^ np.uint64(n)), counts


class MinHasher:
    """`num_perm` seeded hash functions from a universal family; signature = min over shingles.

    family "multiply_shift" (default): h_k(x) = ((a_k x + b_k) mod 2**64) >> 32 on 32-bit keys
        x, a_k, b_k random 64-bit (Dietzfelbinger's multiply-add-shift, strongly universal);
        three cheap ops, ~6x faster in NumPy than the modulo below.
    family "mod_prime": h_k(x) = (a_k x + b_k) mod (2**31 - 1), the textbook choice; every
        product stays below 2**62, so uint64 arithmetic is exact.
    """

    FAMILIES = ("multiply_shift", "mod_prime")

    def __init__(self, num_perm: int = 128, seed: int = 0, family: str = "multiply_shift"):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1; got {num_perm}")
        if family not in self.FAMILIES:
            raise ValueError(f"unknown hash family {family!r}; use one of {self.FAMILIES}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D696E68]))  # "minh"
        self.num_perm, self.family = num_perm, family
        top = (1 << 64) - 1 if family == "multiply_shift" else int(PRIME)
        self.a = rng.integers(1, top, size=num_perm, dtype=np.uint64)
        if family == "multiply_shift":
            self.a |= np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, top, size=num_perm, dtype=np.uint64)

    def _keys(self, hashes: np.ndarray) -> np.ndarray:
        hashes = np.asarray(hashes, dtype=np.uint64)
        return hashes >> np.uint64(32) if self.family == "multiply_shift" else hashes % PRIME

    def _apply(self, x_B: np.ndarray) -> np.ndarray:
        """[B] keys -> [num_perm, B] hash values < 2**32 (perm-major: the min runs along contiguous memory)."""
        hv_PB = np.multiply(self.a[:, None], x_B[None, :])
        np.add(hv_PB, self.b[:, None], out=hv_PB)
        if self.family == "multiply_shift":
            return np.right_shift(hv_PB, np.uint64(32), out=hv_PB)
        return np.remainder(hv_PB, PRIME, out=hv_PB)

    def signatures(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures [R, num_perm] uint32 of R rows whose shingles lie consecutively in `hashes`.

        `counts[r]` is row r's number of shingles; a row with none gets EMPTY everywhere.
        """
        counts = np.asarray(counts, dtype=np.int64)
        sig = np.full((len(counts), self.num_perm), EMPTY, dtype=np.uint32)
        if len(hashes) == 0:
            return sig
        x = self._keys(hashes)
        row_of = np.repeat(np.arange(len(counts)), counts)
        for s0 in range(0, len(x), _BLOCK):  # blocks of shingles; a row may span two blocks
            rows = row_of[s0 : s0 + _BLOCK]
            hv_PB = self._apply(x[s0 : s0 + _BLOCK])
            first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            mins_PR = np.minimum.reduceat(hv_PB, first, axis=1).astype(np.uint32)
            r = rows[first]
            sig[r] = np.minimum(sig[r], mins_PR.T)
        return sig


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm whose S-curve midpoint (1/b)**(1/r) is closest to threshold.

    Ties go to more rows (fewer false candidates). A pair of Jaccard J shares at least
    one band with probability 1 - (1 - J**r)**b.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"LSH threshold must be in (0, 1); got {threshold}")
    r = np.arange(1, num_perm + 1)
    b = num_perm // r
    mid = (1.0 / b) ** (1.0 / r)
    best = int(np.flatnonzero(np.abs(mid - threshold) == np.abs(mid - threshold).min())[-1])
    return int(b[best]), int(r[best])


def candidate_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """P(a pair with this Jaccard becomes an LSH candidate) = 1 - (1 - J**rows)**bands."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 bucket key of each row in each band: [R, bands]."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    sig3 = sig[:, : bands * rows].reshape(len(sig), bands, rows).astype(np.uint64)
    h = np.zeros((len(sig), bands), dtype=np.uint64)
    for c in range(rows):
        h = (h ^ (sig3[:, :, c] + np.uint64(1))) * _MIX
    return fmix64(h)


def candidate_pairs(keys: np.ndarray, max_partners: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs (i < j) of rows sharing a bucket in at least one band.

    `keys` is [R, bands] from `band_keys`. Inside a bucket (rows sorted by index) each row
    is paired with the next `max_partners` rows: every pair for buckets up to
    max_partners + 1 rows, a band of neighbours (still connected) for larger ones, so a
    bucket of 10,000 copies costs 10,000 * max_partners pairs, not 50 million.
    """
    n_rows, n_bands = keys.shape
    if n_rows < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    band = np.repeat(np.arange(n_bands, dtype=np.int64), n_rows)
    key = keys.T.ravel()
    row = np.tile(np.arange(n_rows, dtype=np.int64), n_bands)
    order = np.lexsort((row, key, band))
    band, key, row = band[order], key[order], row[order]
    new_run = np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1])]
    run = np.cumsum(new_run)
    out_i, out_j = [], []
    for d in range(1, max_partners + 1):  # a loop over offsets inside a bucket, vectorised over buckets
        same = run[:-d] == run[d:]
        if not same.any():
            break
        out_i.append(row[:-d][same])
        out_j.append(row[d:][same])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pair = np.unique(np.concatenate(out_i) * n_rows + np.concatenate(out_j))
    return pair // n_rows, pair % n_rows


def agreement(sig: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Estimated Jaccard of each pair: the fraction of signature positions that agree."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), block):
        out[s : s + block] = (sig[i[s : s + block]] == sig[j[s : s + block]]).mean(axis=1)
    return out


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes given undirected edges (i, j)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)
