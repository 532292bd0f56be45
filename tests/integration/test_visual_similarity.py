"""Visual similarity end to end (issue 14 item 5): originals and transformed copies labeled by the
real pipeline with the local labeler, on noida-db and on a real OpenSearch node; ``similar``
finds each copy's original in its top 5, ``duplicates`` groups them, each copy is flagged at index
time, and the daily report lists them."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import Request
from PIL import Image, ImageOps

from imagelabels import cli
from imagelabels.documents import INDEX_ALIAS
from imagelabels.engine.indexing import ensure_indices
from imagelabels.fingerprints import Signals
from imagelabels.labelers import LabelingSettings
from imagelabels.labelers.local import LocalLabeler
from imagelabels.pipeline.batch import RunContext, process_batch
from imagelabels.reports.aggregations import compute_report
from imagelabels.sources.listing import ListedObject, list_objects_in_window

pytestmark = pytest.mark.both_engines

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "benchmarks" / "eval_set"
ORIGINALS = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg", "chair.jpg", "baseball.jpg"]
COPIED = ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]
RUN = RunContext("image_ingest_s3_hourly", "manual__visual")


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def transformed(image: Image.Image) -> dict[str, bytes]:
    """Mirrored, cropped (5 % a side), half-size and recompressed (quality 40) copies."""
    width, height = image.size
    return {
        "mirror": _jpeg(ImageOps.mirror(image)),
        "crop": _jpeg(image.crop((width // 20, height // 20, width - width // 20, height - height // 20))),
        "half": _jpeg(image.resize((width // 2, height // 2))),
        "q40": _jpeg(image, quality=40),
    }


def _listed(s3, prefix: str) -> list[ListedObject]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    return list(
        list_objects_in_window(s3, "photos", prefix, now - timedelta(minutes=5), now + timedelta(minutes=5))
    )


def _cli(stack, *argv: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    out = io.StringIO()
    engine = ["--engine", stack.engine_flavor]
    code = cli.main([*argv, "--json", "--no-urls", "--es-url", stack.es_url, *engine], out=out)
    assert code == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


@pytest.fixture
def indexed(s3, es, clean_stack, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("IMAGELABELS_LOCAL_PERSON", "off")
    ensure_indices(es)
    s3.create_bucket(Bucket="photos")
    for name in ORIGINALS:
        s3.put_object(Bucket="photos", Key=f"originals/{name}", Body=(EVAL / name).read_bytes())
    labeler = LocalLabeler(LabelingSettings(70, 10, features=("labels",)))
    first = process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket="photos",
        objects=_listed(s3, "originals/"),
        run=RUN,
        refresh="wait_for",
    )
    assert first.indexed == len(ORIGINALS)
    for name in COPIED:
        with Image.open(EVAL / name) as image:
            for kind, body in transformed(image.convert("RGB")).items():
                s3.put_object(Bucket="photos", Key=f"copies/{Path(name).stem}_{kind}.jpg", Body=body)
    second = process_batch(
        s3_client=s3,
        es=es,
        labeler=labeler,
        bucket="photos",
        objects=_listed(s3, "copies/"),
        run=RUN,
        refresh="wait_for",
    )
    assert second.indexed == 4 * len(COPIED)
    return clean_stack


def _documents(es) -> dict[str, dict]:  # type: ignore[no-untyped-def, type-arg]
    hits = es.search(index=INDEX_ALIAS, size=100)["hits"]["hits"]
    return {hit["_source"]["s3key"]: {"_id": hit["_id"], **hit["_source"]} for hit in hits}


def test_every_document_carries_visual_signals_and_copies_are_flagged(indexed, es) -> None:  # type: ignore[no-untyped-def]
    documents = _documents(es)
    assert len(documents) == len(ORIGINALS) + 4 * len(COPIED)
    for key, document in documents.items():
        visual = document["visual"]
        assert [len(visual["phash"]), len(visual["phash_mirror"])] == [16, 16]
        assert len(visual["embedding"]) == 1708  # 1,280 int8 as base64
        assert len(visual["vector"]) == 128
        assert all(-127 <= value <= 127 for value in visual["vector"])
        assert any(band.startswith("h0:") for band in visual["bands"])
        assert any(band.startswith("e0:") for band in visual["bands"])
        if key.startswith("originals/"):
            assert "near_duplicate_of" not in visual, key
        else:
            original = documents[f"originals/{key.split('/')[1].rsplit('_', 1)[0]}.jpg"]
            assert visual["near_duplicate_of"] == original["_id"], key


# what each engine of the test stack searches vectors with (noida-db answers like Elasticsearch;
# the embedded OpenSearch node carries the k-NN plugin, as Amazon OpenSearch Service domains do)
VECTOR_KINDS = {"elasticsearch": "dense_vector", "opensearch": "knn_vector"}


def test_similarity_asks_the_engines_vector_index_and_bands_give_the_same_answers(indexed, es) -> None:  # type: ignore[no-untyped-def]
    """Where the engine searches vectors the candidates come from its HNSW graph; the band path
    (engines without) finds the same originals, and both rank them by the same exact cosine."""
    from imagelabels.documents import versioned_index_name
    from imagelabels.search.similarity import similar_images, vector_search_available

    kind = VECTOR_KINDS[indexed.engine_flavor]
    assert es.vector_kind == kind
    current = versioned_index_name()
    mapping = es.indices.get_mapping(index=current)[current]["mappings"]["properties"]["visual"]
    assert mapping["properties"]["vector"]["type"] == kind
    assert vector_search_available(es)
    documents = _documents(es)
    for name in COPIED:
        for kind_of_copy in ("mirror", "crop", "half", "q40"):
            copy = documents[f"copies/{Path(name).stem}_{kind_of_copy}.jpg"]
            signals = Signals.of_source(copy)
            answers = {
                vectors: similar_images(es, signals, exclude_ids=[copy["_id"]], size=5, vectors=vectors)
                for vectors in (True, False)
            }
            for vectors, found in answers.items():
                top = [hit.hit.s3key for hit in found]
                assert f"originals/{name}" in top, (vectors, kind_of_copy, top)
                assert copy["s3key"] not in top
            by_vector = [(f.hit.s3key, round(f.similarity, 6)) for f in answers[True]]
            by_bands = [(f.hit.s3key, round(f.similarity, 6)) for f in answers[False]]
            assert by_vector[:4] == by_bands[:4]  # the same four copies/original, same cosines


def test_an_image_without_embedding_is_still_found_next_to_the_vectors(indexed, es) -> None:  # type: ignore[no-untyped-def]
    """A Rekognition-labeled image has a pHash but no embedding (so no vector): a question with an
    embedding finds it through the pHash bands asked alongside the nearest vectors."""
    from imagelabels.search.similarity import similar_images

    documents = _documents(es)
    original = documents["originals/rocket.jpg"]
    visual = {key: value for key, value in original["visual"].items() if key in ("phash", "phash_mirror")}
    visual["bands"] = [band for band in original["visual"]["bands"] if band.startswith("h")]
    source = {key: value for key, value in original.items() if key != "_id"}
    source.update(
        visual=visual, s3key="rekognition/rocket.jpg", s3_location="s3://photos/rekognition/rocket.jpg"
    )
    es.index(index=INDEX_ALIAS, id="rekognition-rocket", document=source, refresh=True)
    example = Signals.of_source(documents["copies/rocket_q40.jpg"])
    assert example.embedding is not None
    found = similar_images(es, example, exclude_ids=[documents["copies/rocket_q40.jpg"]["_id"]], size=10)
    assert "rekognition/rocket.jpg" in [hit.hit.s3key for hit in found]


def test_similar_finds_the_original_of_every_copy_in_its_top_5(indexed) -> None:  # type: ignore[no-untyped-def]
    for name in COPIED:
        stem = Path(name).stem
        for kind in ("mirror", "crop", "half", "q40"):
            answer = _cli(indexed, "similar", f"copies/{stem}_{kind}.jpg", "--size", "5")
            top = [hit["s3key"] for hit in answer["hits"]]
            assert f"originals/{name}" in top, (kind, top)
            assert f"copies/{stem}_{kind}.jpg" not in top  # never the example itself


def test_similar_takes_a_local_file_and_leaves_out_other_photos(indexed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    answer = _cli(indexed, "similar", str(EVAL / "chelsea.jpg"), "--size", "5")
    assert answer["example"] == {"phash": answer["example"]["phash"], "embedding": True}
    hits = answer["hits"]
    # the file is the indexed original (same bytes): left out by its MD5; its four copies lead
    assert [hit["s3key"].split("_")[0] for hit in hits[:4]] == ["copies/chelsea"] * 4
    assert all(hit["near_duplicate"] for hit in hits[:4])
    assert all(hit["s3key"] != "originals/chelsea.jpg" for hit in hits)


def test_duplicates_groups_each_original_with_its_copies(indexed) -> None:  # type: ignore[no-untyped-def]
    answer = _cli(indexed, "duplicates", "--bucket", "photos")
    assert answer["images_checked"] == len(ORIGINALS) + 4 * len(COPIED)
    groups = sorted(sorted(image["s3_location"] for image in group["images"]) for group in answer["groups"])
    expected = sorted(
        sorted(
            [f"s3://photos/originals/{name}"]
            + [
                f"s3://photos/copies/{Path(name).stem}_{kind}.jpg"
                for kind in ("crop", "half", "mirror", "q40")
            ]
        )
        for name in COPIED
    )
    assert groups == expected
    scoped = _cli(indexed, "duplicates", "--prefix", "originals/")
    assert scoped["groups"] == []  # the originals are not alike among themselves


def test_the_daily_report_lists_each_copy_with_its_original(indexed, es) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    report = compute_report(
        es, name="labels", period="daily", start=now - timedelta(hours=1), end=now + timedelta(hours=1)
    )
    rows = sorted((image, original) for image, original, _, _ in report.table("near_duplicates").rows)
    assert rows == sorted(
        (f"s3://photos/copies/{Path(name).stem}_{kind}.jpg", f"s3://photos/originals/{name}")
        for name in COPIED
        for kind in ("crop", "half", "mirror", "q40")
    )


def test_the_image_page_lists_more_like_this(indexed) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from imagelabels import webapp

    async def signed_in(request: Request) -> str:
        return "user"

    app = webapp.create_app(elasticsearch=indexed.elasticsearch, authenticate=signed_in)
    client = TestClient(app)
    documents = _documents(indexed.elasticsearch())
    doc_id = documents["copies/coffee_mirror.jpg"]["_id"]
    answer = client.get(f"/api/images/{doc_id}/similar", params={"size": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["checked"] is True
    locations = [hit["s3_location"] for hit in body["hits"]]
    assert "s3://photos/originals/coffee.jpg" in locations
    assert "s3://photos/copies/coffee_mirror.jpg" not in locations
    first = body["hits"][0]
    assert first["url"] == f"/api/images/{first['id']}/content"
    assert 0.8 <= first["similarity"] <= 1.0
    assert first["near_duplicate"] is True
    assert client.get("/api/images/nope/similar").status_code == 404
