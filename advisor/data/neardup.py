"""Near-duplicate detection that scales to millions of rows: MinHash signatures with LSH banding.

Text is normalised (Unicode NFKC, lower-case, words = runs of letters/digits, punctuation and
whitespace dropped) and cut into word bigrams (SHINGLE_WORDS = 2). Each row keeps one fixed-size
signature: MINHASHES = 128 min-hashes, of which only 8 bits are stored (b-bit MinHash, Li & König
2010) — 128 bytes per row, whatever the row's length. Two rows agree on one stored byte with
probability J + (1 - J)/256, where J is the Jaccard similarity of their bigram sets, so the
signature estimates J (standard deviation ≈ 0.04 at J = 0.7).

Candidates come from LSH banding: 32 bands of 4 bytes; two rows are compared when one band is equal
(probability 1 - (1 - J⁴)³²: 0.9998 at J = 0.7, 0.988 at J = 0.6, 0.003 at J = 0.1). A candidate pair
is a near-duplicate when its estimated J ≥ THRESHOLD = 0.6. For an example of n words with k words
changed (spread out), J ≈ (n - 1 - 2k) / (n - 1 + 2k), at least 0.6 while k ≤ (n - 1) / 8: in a
40-word example 3 changed words (J ≈ 0.73) are found with probability > 99.9 %, 4 most of the time;
"What is 2+3? 5" and "What is 2+4? 6" (J = 0.33) are different examples and are not flagged.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

import numpy as np

SHINGLE_WORDS = 2  # words per shingle
MINHASHES = 128  # min-hashes per row (one stored byte each)
BANDS, ROWS_PER_BAND = 32, 4  # LSH banding: BANDS × ROWS_PER_BAND = MINHASHES
THRESHOLD = 0.6  # estimated Jaccard similarity at or above which two rows are near-duplicates
MAX_LEADERS = 8  # rows of one LSH bucket each later row is compared against (bounds the work)
SIGNATURE_BYTES = MINHASHES  # stored per row

_WORD = re.compile(r"\w+")
_rng = np.random.default_rng(20240607)  # fixed: signatures are reproducible across runs and machines
_A = _rng.integers(1, 2**32, MINHASHES, dtype=np.uint64).astype(np.uint32) | np.uint32(1)  # odd multipliers
_B = _rng.integers(0, 2**32, MINHASHES, dtype=np.uint64).astype(np.uint32)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def words(text: str) -> list[str]:
    """The normalised words of `text`: NFKC, lower-case, runs of letters and digits."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def normalised(text: str) -> str:
    """`text` reduced to its words joined by single spaces (used for near-duplicate and prompt keys)."""
    return " ".join(words(text))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 that spreads every input bit over all output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _shingles(word_lists: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every row's word bigrams, flat, and each row's offset into them. A row of
    fewer than two words has one shingle (its word, or the empty text)."""
    n = len(word_lists)
    lens = np.fromiter(map(len, word_lists), dtype=np.int64, count=n)
    flat = [w for ws in word_lists for w in ws]
    h = np.fromiter(map(zlib.crc32, map(str.encode, flat)), dtype=np.uint64, count=len(flat))
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    bigrams = _mix(_mix(h[:-1]) * np.uint64(31) + h[1:])  # bigram i = words i, i+1
    within = np.ones(len(bigrams), dtype=bool)
    ends = starts[1:][(starts[1:] > 0) & (starts[1:] <= len(bigrams))] - 1
    within[ends] = False  # bigrams that would cross into the next row
    short = lens < SHINGLE_WORDS
    counts = np.where(short, 1, lens - 1)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    is_short = np.zeros(len(out), dtype=bool)
    is_short[offsets[short]] = True
    out[~is_short] = bigrams[within] if len(bigrams) else bigrams
    first = h[np.minimum(starts[short], max(len(h) - 1, 0))] if len(h) else np.zeros(short.sum(), np.uint64)
    out[is_short] = _mix(np.where(lens[short] == 1, first, np.uint64(0)))
    return (out >> np.uint64(32)).astype(np.uint32), offsets


def signatures(word_lists: list[list[str]]) -> np.ndarray:
    """(rows, MINHASHES) uint8 b-bit MinHash signatures of rows given as word lists (see `words`),
    computed as one batch: min over each row's shingles of (a·h + b) mod 2³², bits 8-15 kept."""
    if not word_lists:
        return np.zeros((0, MINHASHES), dtype=np.uint8)
    shingles, offsets = _shingles(word_lists)
    values = _A[:, None] * shingles[None, :]  # (MINHASHES, shingles), wraps mod 2**32
    values += _B[:, None]
    mins = np.minimum.reduceat(values, offsets, axis=1)  # (MINHASHES, rows)
    return np.ascontiguousarray(((mins >> np.uint32(8)) & np.uint32(0xFF)).astype(np.uint8).T)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of signature rows (b-bit correction for chance byte matches)."""
    agree = (a == b).mean(axis=-1)
    return np.clip((agree - 1 / 256) / (1 - 1 / 256), 0.0, 1.0)


def _band_keys(sig: np.ndarray) -> np.ndarray:
    """(rows, BANDS) uint32: each band's 4 signature bytes as one key."""
    return np.ascontiguousarray(sig).view(np.uint32).reshape(len(sig), BANDS)


def near_pairs(sig: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Near-duplicate pairs within one file: (pairs, 2) int64 rows (earlier, later), sorted and unique.

    In each band's buckets, every row is compared with the bucket's leaders (its first row, then each
    row that matched no leader, up to MAX_LEADERS); buckets of two — nearly all of them — are compared
    in one vectorised step."""
    found = []
    keys = _band_keys(sig)
    for b in range(BANDS):
        order = np.argsort(keys[:, b], kind="stable")  # stable: rows of a bucket in file order
        k = keys[order, b]
        same = k[1:] == k[:-1]
        if not same.any():
            continue
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        sizes = np.diff(np.concatenate((starts, [len(k)])))
        two = starts[sizes == 2]
        a, c = order[two], order[two + 1]
        hit = similarity(sig[a], sig[c]) >= threshold
        found.append(np.stack((a[hit], c[hit]), axis=1))
        for s, n in zip(starts[sizes > 2], sizes[sizes > 2], strict=True):
            found.append(_bucket_pairs(sig, order[s : s + n], threshold))
    return _unique_pairs(found)


def _bucket_pairs(sig: np.ndarray, members: np.ndarray, threshold: float) -> np.ndarray:
    leaders = [members[0]]
    out = []
    for m in members[1:]:
        sims = similarity(sig[leaders], sig[m])
        hit = np.flatnonzero(sims >= threshold)
        if hit.size:
            out.append((leaders[hit[0]], m))
        elif len(leaders) < MAX_LEADERS:
            leaders.append(m)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def cross_pairs(sig_a: np.ndarray, sig_b: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Near-duplicate pairs between two files: (pairs, 2) int64 rows (index in a, index in b); each
    row of b is compared with the first MAX_LEADERS rows of a in each of its buckets."""
    found: list[tuple[int, int]] = []
    keys_a, keys_b = _band_keys(sig_a), _band_keys(sig_b)
    for band in range(BANDS):
        order = np.argsort(keys_a[:, band], kind="stable")
        ka = keys_a[order, band]
        lo = np.searchsorted(ka, keys_b[:, band], side="left")
        hi = np.searchsorted(ka, keys_b[:, band], side="right")
        for j in np.flatnonzero(hi > lo):
            cand = order[lo[j] : min(hi[j], lo[j] + MAX_LEADERS)]
            sims = similarity(sig_a[cand], sig_b[j])
            found.extend((int(i), int(j)) for i in cand[sims >= threshold])
    return _unique_pairs([np.array(found, dtype=np.int64).reshape(-1, 2)])


def _unique_pairs(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(parts).astype(np.int64), axis=0)


def cluster_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each of n rows, the first (smallest) row of its near-duplicate cluster (connected
    component of `pairs`); a row in no pair is its own root."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    for x in np.unique(pairs):
        parent[x] = find(int(x))
    return parent
