"""Visual fingerprints: what an image looks like, computed once at labeling time and stored.

Two signals are computed once per image, at labeling time, and stored in the document's
``visual`` object (:func:`visual_fields`):

* **Perceptual hash** (:func:`phash`, every image whatever the labeler): the classic 64-bit pHash
  -- grayscale, 32 x 32, 2-D DCT, the 8 x 8 lowest frequencies (DC included) compared with their
  median. Resizing, recompression and small crops move few bits; a mirror image moves about half,
  so the hash of the mirrored image is stored too (``visual.phash_mirror``) and distances are the
  smaller of the two (:func:`phash_distance`).
* **Embedding** (the local labeler only): the 1,280 pooled features of the same EfficientNet-Lite0
  pass that labels the image (a second output of the graph, free). It is centred (the mean of its
  values subtracted: the features follow ReLU6, so every raw vector has positive values and any
  two unrelated photos would look ~0.5 alike), L2-normalised and quantised to int8
  (:func:`compact_embedding`): 1,280 bytes, 1,708 base64 characters in ``_source``. Per-vector
  scaling (largest magnitude -> 127) needs no stored scale because only cosines are asked of it;
  the quantisation moves a cosine by ~1e-4 (unit test), against float16's 2,560 bytes for no
  useful gain. It is stored, not indexed (``binary``): the exact cosine every ranking ends with.
* **Search vector** (:func:`search_vector`, with the embedding): the embedding projected onto
  :data:`VECTOR_DIMS` fixed random directions (Johnson-Lindenstrauss: cosines kept within ~0.1)
  and quantised to int8, for the engines that index vectors (Elasticsearch ``dense_vector``,
  OpenSearch's k-NN ``knn_vector``): 128 values cost ~450 bytes of JSON and a small HNSW graph
  where 1,280 would cost ~5 kB and ten times the graph work, and the candidates it finds are
  re-ranked by the exact cosine anyway. Engines without vector search keep it in ``_source`` only.

The questions asked of these fields (candidates, "more like this", duplicate groups) live in
:mod:`imagelabels.search.similarity`; this module is below every stage that computes or stores the
signals (preflight, labelers, documents), so it imports nothing of the project.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image

HASH_SIDE = 32  # the pHash's DCT input
HASH_LOW = 8  # the 8 x 8 lowest frequencies -> 64 bits
HASH_BANDS = 8  # 8 bits each
EMBEDDING_BANDS = 32
EMBEDDING_BAND_BITS = 6
EMBEDDING_SIZE = 1280
LSH_SEED = 20261205
VECTOR_DIMS = 128
VECTOR_SEED = 20261206
PHASH_DUPLICATE = 6
# Measured on the 43 photos of benchmarks/eval_set (benchmarks/visual_similarity.py): the copies'
# lowest cosine to their original was 0.817 (half size), 0.851 (5 % cropped a side), 0.838 (JPEG
# quality 40), 0.93 (mirrored); the highest cosine between two different photos 0.44. pHash alone
# misses crops (up to 22 bits apart), so 0.95 would leave most crops ungrouped; 0.80 keeps every
# measured copy with a wide margin to unrelated photos.
COSINE_DUPLICATE = 0.80


# --- perceptual hash ------------------------------------------------------------------------------


@cache
def _dct_matrix(n: int = HASH_SIDE) -> NDArray[np.float64]:
    """The orthonormal DCT-II matrix: ``D @ x`` is the DCT of a column ``x``."""
    import numpy as np

    k = np.arange(n)[:, np.newaxis]
    i = np.arange(n)[np.newaxis, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix  # type: ignore[no-any-return]


def _gray32(image: Image) -> NDArray[np.float64]:
    """``image`` as 32 x 32 luminance, area-averaged (a large image is box-reduced first)."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    factor = max(1, min(image.size) // (4 * HASH_SIDE))
    if factor > 1:
        image = image.reduce(factor)
    small = image.convert("L").resize((HASH_SIDE, HASH_SIDE), PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def _hash_bits(gray: NDArray[np.float64]) -> int:
    import numpy as np

    dct = _dct_matrix()
    low = (dct @ gray @ dct.T)[:HASH_LOW, :HASH_LOW].flatten()
    bits = low > np.median(low)
    return int("".join("1" if bit else "0" for bit in bits), 2)


def phash_pair(image: Image) -> tuple[str, str]:
    """The 64-bit pHash of ``image`` and of its mirror image, as 16 hex digits each."""
    gray = _gray32(image)
    return f"{_hash_bits(gray):016x}", f"{_hash_bits(gray[:, ::-1]):016x}"


def phash(image: Image) -> str:
    """The 64-bit pHash of ``image`` (16 hex digits)."""
    return phash_pair(image)[0]


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def phash_distance(a: str, b: str, b_mirror: str | None = None) -> int:
    """Hamming distance of pHash ``a`` to image ``b``: to ``b`` or, when given, to its mirror,
    whichever is closer (a mirrored copy is then as near as a recompressed one)."""
    distance = hamming(a, b)
    return min(distance, hamming(a, b_mirror)) if b_mirror else distance


# --- embedding --------------------------------------------------------------------------------------


def normalized(features: Sequence[float] | NDArray[Any]) -> NDArray[np.float32]:
    """Pooled features -> centred (mean subtracted), unit-length float32 vector."""
    import numpy as np

    vector = np.asarray(features, dtype=np.float64).reshape(-1)
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)  # type: ignore[no-any-return]


def _int8(vector: NDArray[Any]) -> NDArray[np.int8]:
    """``vector`` scaled so its largest magnitude is 127, rounded to int8 (no scale is kept:
    only cosines are asked of it)."""
    import numpy as np

    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = 127.0 / peak if peak > 0 else 0.0
    return np.clip(np.rint(values * scale), -127, 127).astype(np.int8)


def compact_embedding(vector: NDArray[Any]) -> str:
    """A normalised embedding as base64 of int8 (:func:`_int8`)."""
    return base64.b64encode(_int8(vector).tobytes()).decode("ascii")


def expand_embedding(text: str) -> NDArray[np.float32]:
    """:func:`compact_embedding`'s text -> unit-length float32 vector."""
    import numpy as np

    vector = np.frombuffer(base64.b64decode(text), dtype=np.int8).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def cosine(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Cosine of two unit vectors (clipped into -1..1)."""
    import numpy as np

    return max(-1.0, min(1.0, float(np.dot(a, b))))


@cache
def _hyperplanes() -> NDArray[np.float32]:
    """``[bands x bits, 1280]`` random Gaussian planes, the same in every process (PCG64 with a
    fixed seed draws the same numbers in every numpy since 1.17)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(LSH_SEED))
    planes = rng.standard_normal((EMBEDDING_BANDS * EMBEDDING_BAND_BITS, EMBEDDING_SIZE))
    return planes.astype(np.float32)


def embedding_bands(vector: NDArray[Any]) -> list[str]:
    """``e<band>:<hex>``: the sides of the embedding's random hyperplanes, 8 bits a band."""
    import numpy as np

    if vector.size != EMBEDDING_SIZE:
        return []
    signs = (_hyperplanes() @ vector.astype(np.float32)) > 0
    bands = []
    for band in range(EMBEDDING_BANDS):
        bits = signs[band * EMBEDDING_BAND_BITS : (band + 1) * EMBEDDING_BAND_BITS]
        value = sum(1 << (EMBEDDING_BAND_BITS - 1 - i) for i, bit in enumerate(bits) if bit)
        bands.append(f"e{band:x}:{value:02x}")
    return bands


@cache
def _projection() -> NDArray[np.float32]:
    """``[128, 1280]`` random Gaussian directions, the same in every process (as :func:`_hyperplanes`)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(VECTOR_SEED))
    return rng.standard_normal((VECTOR_DIMS, EMBEDDING_SIZE)).astype(np.float32)


def search_vector(vector: NDArray[Any]) -> list[int]:
    """The engine's vector of an embedding: projected to :data:`VECTOR_DIMS` values, int8
    (largest magnitude -> 127, as :func:`compact_embedding`; cosine needs no scale). Empty for a
    vector of another size (an older model's)."""
    import numpy as np

    if vector.size != EMBEDDING_SIZE:
        return []
    return [int(value) for value in _int8(_projection() @ np.asarray(vector, dtype=np.float32).reshape(-1))]


def hash_bands(*hashes: str) -> list[str]:
    """``h<band>:<hex>``: every hash cut into 8 bands of 8 bits (duplicates removed)."""
    bands: dict[str, None] = {}
    for value in hashes:
        for band in range(HASH_BANDS):
            bands[f"h{band}:{value[2 * band : 2 * band + 2]}"] = None
    return list(bands)


# --- what a document stores -------------------------------------------------------------------------


@dataclass(frozen=True)
class Signals:
    """What is known of an image's looks: its pHash (and its mirror's) and, from the local
    labeler, its normalised embedding."""

    phash: str | None = None
    phash_mirror: str | None = None
    embedding: NDArray[np.float32] | None = field(default=None, compare=False, repr=False)

    def bands(self) -> list[str]:
        bands = hash_bands(*(h for h in (self.phash, self.phash_mirror) if h))
        if self.embedding is not None:
            bands += embedding_bands(self.embedding)
        return bands

    @classmethod
    def of_source(cls, source: Mapping[str, Any]) -> Signals:
        visual = source.get("visual") or {}
        text = visual.get("embedding")
        return cls(visual.get("phash"), visual.get("phash_mirror"), expand_embedding(text) if text else None)


def visual_fields(
    phash_value: str | None, phash_mirror: str | None, embedding: str | None
) -> dict[str, Any] | None:
    """The document's ``visual`` object (``None`` when nothing is known)."""
    if not phash_value and not embedding:
        return None
    vector = expand_embedding(embedding) if embedding else None
    signals = Signals(phash_value, phash_mirror, vector)
    visual: dict[str, Any] = {"bands": signals.bands()}
    if phash_value:
        visual["phash"] = phash_value
    if phash_mirror:
        visual["phash_mirror"] = phash_mirror
    if embedding:
        visual["embedding"] = embedding
    if vector is not None and (searchable := search_vector(vector)):
        visual["vector"] = searchable
    return visual


def similarity(a: Signals, b: Signals) -> float | None:
    """How alike two images look, 0..1: the embeddings' cosine when both have one, else
    ``1 - pHash distance / 64`` (mirror allowed); ``None`` when they share no signal."""
    if a.embedding is not None and b.embedding is not None:
        return cosine(a.embedding, b.embedding)
    if a.phash and b.phash:
        return 1.0 - phash_distance(a.phash, b.phash, b.phash_mirror) / 64.0
    return None


def is_near_duplicate(a: Signals, b: Signals) -> bool:
    """pHash distance <= :data:`PHASH_DUPLICATE` (mirror allowed) or cosine >= :data:`COSINE_DUPLICATE`."""
    if a.phash and b.phash and phash_distance(a.phash, b.phash, b.phash_mirror) <= PHASH_DUPLICATE:
        return True
    return (
        a.embedding is not None
        and b.embedding is not None
        and cosine(a.embedding, b.embedding) >= COSINE_DUPLICATE
    )
