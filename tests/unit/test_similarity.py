"""Visual similarity signals (issue 14 item 5): pHash, embedding compaction, LSH bands, grouping."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imagelabels import fingerprints
from imagelabels.documents import IMAGE_MAPPINGS, LabelResult, ObjectInfo, build_document
from imagelabels.search import similarity as sim

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted(p for p in (ROOT / "sample_images").iterdir() if p.suffix in {".png", ".jpg"})


def _photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _recompressed(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    dx, dy = int(width * fraction), int(height * fraction)
    return image.crop((dx, dy, width - dx, height - dy))


COPIES = {
    "mirrored": ImageOps.mirror,
    "half size": lambda image: image.resize((image.width // 2, image.height // 2)),
    "quarter size": lambda image: image.resize((image.width // 4, image.height // 4)),
    "JPEG quality 30": lambda image: _recompressed(image, 30),
}


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", list(COPIES))
def test_phash_of_a_transformed_copy_stays_within_the_duplicate_threshold(photo: Path, kind: str) -> None:
    image = _photo(photo)
    original, mirror = fingerprints.phash_pair(image)
    copy = fingerprints.phash(COPIES[kind](image))
    assert fingerprints.phash_distance(copy, original, mirror) <= fingerprints.PHASH_DUPLICATE


def test_a_mirrored_copy_is_far_from_the_hash_itself_but_equal_to_the_stored_mirror() -> None:
    image = _photo(ROOT / "sample_images" / "chelsea.png")
    original, mirror = fingerprints.phash_pair(image)
    flipped = fingerprints.phash(ImageOps.mirror(image))
    assert fingerprints.hamming(flipped, original) > 16  # why the mirror's hash is stored
    assert fingerprints.hamming(flipped, mirror) <= 2


def test_different_photos_are_far_apart_by_phash() -> None:
    hashes = {photo.name: fingerprints.phash_pair(_photo(photo)) for photo in PHOTOS}
    for (_, (a, _)), (_, (b, b_mirror)) in combinations(hashes.items(), 2):
        assert fingerprints.phash_distance(a, b, b_mirror) > 2 * fingerprints.PHASH_DUPLICATE


def test_phash_is_64_bits_of_hex_and_hamming_counts_bits() -> None:
    value = fingerprints.phash(_photo(PHOTOS[0]))
    assert len(value) == 16
    int(value, 16)
    assert fingerprints.hamming("0" * 16, "f" * 16) == 64
    assert fingerprints.hamming("00000000000000ff", "0000000000000001") == 7


def test_embedding_compaction_round_trip_keeps_cosines() -> None:
    rng = np.random.default_rng(3)
    raw = rng.random((20, fingerprints.EMBEDDING_SIZE)) * 6  # ReLU6-like: all positive
    vectors = [fingerprints.normalized(v) for v in raw]
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-5 for v in vectors)
    assert all(abs(float(v.mean())) < 1e-6 for v in vectors)  # centred
    texts = [fingerprints.compact_embedding(v) for v in vectors]
    assert {len(t) for t in texts} == {1708}  # 1,280 bytes as base64
    restored = [fingerprints.expand_embedding(t) for t in texts]
    for i, j in combinations(range(len(vectors)), 2):
        assert fingerprints.cosine(restored[i], restored[j]) == pytest.approx(
            fingerprints.cosine(vectors[i], vectors[j]), abs=2e-3
        )
    for vector, back in zip(vectors, restored, strict=True):
        assert fingerprints.cosine(vector, back) > 0.9999


def test_lsh_bands_agree_in_proportion_to_the_angle() -> None:
    rng = np.random.default_rng(5)
    base = fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
    near = fingerprints.normalized(
        base + 0.25 * fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
    )
    far = fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
    bands = fingerprints.embedding_bands(base)
    assert len(bands) == fingerprints.EMBEDDING_BANDS
    assert sorted({band.split(":")[0] for band in bands}) == sorted(
        f"e{i:x}" for i in range(fingerprints.EMBEDDING_BANDS)
    )
    assert fingerprints.embedding_bands(base) == bands  # the same planes in every call (fixed seed)
    assert fingerprints.cosine(base, near) > 0.95
    shared_near = len(set(bands) & set(fingerprints.embedding_bands(near)))
    shared_far = len(set(bands) & set(fingerprints.embedding_bands(far)))
    assert shared_near >= 10
    assert shared_far <= 4


def _at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit vector ``base``."""
    noise = rng.standard_normal(base.size)
    orthogonal = noise - base * float(noise @ base)
    orthogonal /= np.linalg.norm(orthogonal)
    return cosine * base + math.sqrt(1 - cosine * cosine) * orthogonal  # type: ignore[no-any-return]


@pytest.mark.parametrize(("cosine", "tolerance"), [(0.95, 0.04), (0.8, 0.12), (0.5, 0.25)])
def test_the_search_vector_keeps_cosines_close_enough_to_find_candidates(
    cosine: float, tolerance: float
) -> None:
    """128 random projections, int8: what the engine's vector index compares is the embeddings'
    cosine give or take a few hundredths near duplicates' range (the exact cosine re-ranks)."""
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(50):
        base = fingerprints.normalized(rng.standard_normal(fingerprints.EMBEDDING_SIZE))
        other = _at_cosine(base, cosine, rng)
        a = np.array(fingerprints.search_vector(base), dtype=float)
        b = np.array(fingerprints.search_vector(other), dtype=float)
        assert len(a) == fingerprints.VECTOR_DIMS
        assert a.min() >= -127
        assert a.max() <= 127
        assert max(abs(a.min()), a.max()) == 127  # the full int8 range is used
        errors.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) - cosine)
    assert max(abs(e) for e in errors) < tolerance
    assert abs(float(np.mean(errors))) < 0.03  # unbiased


def test_the_search_vector_is_the_same_in_another_process_and_empty_for_another_size() -> None:
    """Workers index the vectors and other processes (CLI, web app) ask with theirs: the random
    directions must be the same everywhere (a fixed seed, not the process's random state)."""
    import json
    import subprocess
    import sys

    script = (
        "import json, numpy as np; from imagelabels import fingerprints as f; np.random.seed(1); "
        "v = f.normalized(np.arange(f.EMBEDDING_SIZE, dtype=np.float64)); print(json.dumps(f.search_vector(v)))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    vector = fingerprints.normalized(np.arange(fingerprints.EMBEDDING_SIZE, dtype=np.float64))
    assert json.loads(other.stdout) == fingerprints.search_vector(vector)
    assert len(set(fingerprints.search_vector(vector))) > 50  # not a constant
    assert fingerprints.search_vector(np.ones(1000, dtype=np.float32)) == []


def test_each_engine_kind_gets_its_vector_mapping_and_the_template_its_setting() -> None:
    from imagelabels.documents import image_mappings, index_template, upgrade_mappings, vector_mapping

    assert vector_mapping("dense_vector") == {
        "type": "dense_vector",
        "dims": 128,
        "element_type": "byte",
        "index": True,
        "similarity": "cosine",
    }
    knn = vector_mapping("knn_vector")
    assert (knn["dimension"], knn["data_type"], knn["method"]["engine"]) == (128, "byte", "lucene")
    assert vector_mapping(None) == {"type": "byte", "index": False, "doc_values": False}
    with pytest.raises(ValueError, match="unknown vector kind 'faiss'"):
        vector_mapping("faiss")
    assert index_template(2, "knn_vector")["template"]["settings"]["index.knn"] is True
    assert "index.knn" not in index_template(2, "dense_vector")["template"]["settings"]
    mapped = index_template(2, "dense_vector")["template"]["mappings"]["properties"]["visual"]["properties"]
    assert mapped["vector"]["type"] == "dense_vector"
    assert IMAGE_MAPPINGS["properties"]["visual"]["properties"]["vector"]["type"] == "byte"  # not changed
    # an index with a vector keeps its kind; one without gets it stored only
    existing = image_mappings("knn_vector")
    assert "vector" not in upgrade_mappings(existing)["properties"]["visual"]["properties"]
    assert upgrade_mappings({})["properties"]["visual"]["properties"]["vector"]["type"] == "byte"


def test_hash_bands_share_at_least_two_bands_within_six_bits() -> None:
    a = "0123456789abcdef"
    flipped = int(a, 16) ^ sum(1 << bit for bit in (1, 9, 17, 25, 33, 41))  # six bands hit
    b = f"{flipped:016x}"
    assert fingerprints.hamming(a, b) == 6
    assert len(set(fingerprints.hash_bands(a)) & set(fingerprints.hash_bands(b))) == 2
    assert fingerprints.hash_bands(a)[:2] == ["h0:01", "h1:23"]


@pytest.fixture(scope="module")
def signals() -> dict[str, fingerprints.Signals]:
    """pHash pair and embedding (the local classifier's pooled features) of every photo and of its
    copies: 5 % cropped a side, mirrored, half and quarter size, JPEG quality 30."""
    from imagelabels.labelers.local import detect_labels

    found = {}
    for photo in PHOTOS:
        image = _photo(photo)
        variants = {"original": image, "cropped 5%": _crop(image, 0.05)}
        variants.update({kind: copy(image) for kind, copy in COPIES.items()})
        for kind, pixels in variants.items():
            pooled: list[np.ndarray] = []
            detect_labels(pixels, min_confidence=100, max_labels=0, features_out=pooled)
            found[f"{photo.name}/{kind}"] = fingerprints.Signals(
                *fingerprints.phash_pair(pixels), fingerprints.normalized(pooled[0])
            )
    return found


def test_copies_are_near_duplicates_and_different_photos_are_not(signals) -> None:  # type: ignore[no-untyped-def]
    for name, copy in signals.items():
        photo, kind = name.split("/")
        original = signals[f"{photo}/original"]
        if kind != "original":
            assert fingerprints.is_near_duplicate(copy, original), name
            assert fingerprints.is_near_duplicate(original, copy), name
        if kind == "cropped 5%":  # pHash misses crops; the embedding does not
            assert fingerprints.cosine(copy.embedding, original.embedding) >= fingerprints.COSINE_DUPLICATE, (
                name
            )
    originals = [v for n, v in signals.items() if n.endswith("/original")]
    for a, b in combinations(originals, 2):
        assert not fingerprints.is_near_duplicate(a, b)
        assert fingerprints.cosine(a.embedding, b.embedding) < 0.5


def test_duplicate_groups_join_pairs_with_union_find(signals) -> None:  # type: ignore[no-untyped-def]
    members = [sim.Member(name, name, f"s3://b/{name}", value) for name, value in signals.items()]
    groups = sim.duplicate_groups(members)
    assert sorted(sorted(m.doc_id for m in group) for group in groups) == sorted(
        sorted(n for n in signals if n.startswith(f"{photo.name}/")) for photo in PHOTOS
    )


def test_build_document_stores_the_visual_object_in_the_mapped_fields() -> None:
    obj = ObjectInfo("b", "k.jpg", 1, "e", datetime(2026, 1, 1, tzinfo=UTC))
    vector = fingerprints.normalized(np.arange(fingerprints.EMBEDDING_SIZE, dtype=np.float64))
    result = LabelResult([], "local", "v", 70.0, 10, embedding=fingerprints.compact_embedding(vector))
    document = build_document(
        obj, result, dag_id="d", run_id="r", ingested_at=obj.last_modified, phash=("0" * 16, "f" * 16)
    )
    visual = document["visual"]
    assert set(visual) <= set(IMAGE_MAPPINGS["properties"]["visual"]["properties"])
    assert visual["vector"] == fingerprints.search_vector(fingerprints.expand_embedding(visual["embedding"]))
    assert visual["phash"] == "0" * 16
    assert len(visual["bands"]) == 2 * fingerprints.HASH_BANDS + fingerprints.EMBEDDING_BANDS
    assert IMAGE_MAPPINGS["properties"]["visual"]["properties"]["embedding"] == {"type": "binary"}
    bare = build_document(
        obj, LabelResult([], "x", "v", 70.0, 10), dag_id="d", run_id="r", ingested_at=obj.last_modified
    )
    assert "visual" not in bare


def test_duplicate_groups_also_follow_the_index_time_flags() -> None:
    """Beyond max_bucket no band proposes pairs; the flags still join the group."""
    far = fingerprints.Signals("0" * 16, "0" * 16)
    members = [
        sim.Member("a", "a", "s3://b/a", far),
        sim.Member("b", "b", "s3://b/b", far, near_duplicate_of="a"),
        sim.Member("c", "c", "s3://b/c", fingerprints.Signals("f" * 16, "f" * 16), near_duplicate_of="gone"),
    ]
    assert [[m.doc_id for m in g] for g in sim.duplicate_groups(members, max_bucket=1)] == [["a", "b"]]
    assert [[m.doc_id for m in g] for g in sim.duplicate_groups(members)] == [["a", "b"]]
