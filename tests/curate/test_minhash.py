"""MinHash + LSH building blocks: shingles, signatures, banding, candidate pairs, components."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine.curate import minhash


def test_shingles_stay_inside_segments_and_short_segments_count_once():
    values = np.array([1, 2, 3, 4, 9, 1, 2, 3, 7])
    h, counts = minhash.shingle_hashes(values, np.array([4, 1, 4]), n=3)
    assert counts.tolist() == [2, 1, 2]
    assert h[0] == h[3]                     # the 3-gram (1,2,3) hashes alike wherever it occurs
    assert len(set(h.tolist())) == 4        # (1,2,3) (2,3,4) (9) (2,3,7): no window crosses a boundary
    h1, c1 = minhash.shingle_hashes(np.array([5, 6]), np.array([2]), n=3)
    h2, _ = minhash.shingle_hashes(np.array([5, 6, 0]), np.array([3]), n=3)
    assert c1.tolist() == [1] and h1[0] != h2[0]  # the pad is not a token value


@pytest.mark.parametrize("family", minhash.MinHasher.FAMILIES)
def test_signature_agreement_estimates_jaccard(family):
    rng = np.random.default_rng(0)
    hasher = minhash.MinHasher(256, seed=1, family=family)
    universe = rng.permutation(100_000)
    for jacc in (0.2, 0.5, 0.8):
        inter = int(round(400 * 2 * jacc / (1 + jacc)))   # |A|=|B|=400, |A∩B|/|A∪B| = jacc
        a = universe[:400]
        b = np.r_[universe[:inter], universe[1000:1000 + 400 - inter]]
        h, counts = minhash.shingle_hashes(np.r_[a, b], np.array([400, 400]), n=1)
        sig = hasher.signatures(h, counts)
        est = minhash.agreement(sig, np.array([0]), np.array([1]))[0]
        assert abs(est - jacc) < 0.1, (family, jacc, est)


def test_signatures_do_not_depend_on_batching(monkeypatch):
    rng = np.random.default_rng(2)
    lengths = rng.integers(0, 300, 40)
    lengths[5] = 0                                        # a row with no content
    values = rng.integers(0, 5000, lengths.sum())
    h, counts = minhash.shingle_hashes(values, lengths, n=2)
    hasher = minhash.MinHasher(64, seed=0)
    whole = hasher.signatures(h, counts)
    monkeypatch.setattr(minhash, "_BLOCK", 97)            # rows straddle many block boundaries
    assert np.array_equal(hasher.signatures(h, counts), whole)
    alone = hasher.signatures(h[counts[:3].sum():counts[:4].sum()], counts[3:4])
    assert np.array_equal(alone[0], whole[3])
    assert (whole[5] == minhash.EMPTY).all() and (whole[4] < minhash.EMPTY).all()
    assert not np.array_equal(minhash.MinHasher(64, seed=1).signatures(h, counts), whole)


def test_lsh_params_put_the_s_curve_midpoint_near_the_threshold():
    for t in (0.3, 0.5, 0.7, 0.85):
        b, r = minhash.lsh_params(t, 128)
        assert b * r <= 128 and abs((1 / b) ** (1 / r) - t) < 0.08
        p = minhash.candidate_probability(np.array([t - 0.25, t + 0.1]), b, r)
        assert p[0] < 0.5 < p[1]


def test_candidate_pairs_all_pairs_in_small_buckets_neighbours_in_large_ones():
    keys = np.array([[1, 9], [2, 9], [1, 8], [3, 7], [2, 6]], dtype=np.uint64)
    i, j = minhash.candidate_pairs(keys)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 4)]
    big = np.zeros((1000, 3), dtype=np.uint64)           # 1000 identical rows in every band
    i, j = minhash.candidate_pairs(big, max_partners=4)
    assert len(i) <= 1000 * 4 and (i < j).all()
    assert len(np.unique(minhash.components(1000, i, j))) == 1


def test_components_and_band_keys():
    labels = minhash.components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] != labels[3] and labels[4] == labels[5] != labels[0]
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 4], [5, 2, 3, 4]], dtype=np.uint32)
    keys = minhash.band_keys(sig, 2, 2)
    assert keys[0, 0] == keys[1, 0] != keys[2, 0] and keys[0, 1] == keys[2, 1] != keys[1, 1]
    with pytest.raises(ValueError, match="exceeds num_perm"):
        minhash.band_keys(sig, 3, 2)
