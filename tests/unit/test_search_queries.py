"""The shape of the search module's queries and the CLI's argument handling (no servers)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from imagelabels import cli
from imagelabels.documents import label_key
from imagelabels.search import queries as search


def _walk_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in _walk_keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _walk_keys(value)}
    return set()


def test_label_and_confidence_are_matched_on_the_same_label() -> None:
    """The confidence floor applies to the searched label's own feature (not any label of the
    image), and the score is that label's confidence."""
    query = search.label_query("Pizza", 90)
    scored = query["function_score"]
    assert scored["query"] == {
        "rank_feature": {"field": "label_confidence.pizza", "log": {"scaling_factor": 1}, "boost": 1.25}
    }
    assert scored["min_score"] == pytest.approx(90.0 - 0.005, abs=1e-6)
    assert search.label_query("Pizza") == scored["query"]


@pytest.mark.parametrize("confidence", [0.0, 1.0, 5.0, 50.0, 90.0, 99.9, 100.0])
def test_feature_scores_invert_to_the_confidence_the_floor_needs(confidence: float) -> None:
    """log(1 + exp(0.8 c)) x 1.25 is c for every confidence but the smallest, and is monotone,
    so min_score = feature_score(N) keeps exactly the labels at or above N."""
    from imagelabels.documents import confidence_feature

    score = 1.25 * math.log1p(confidence_feature(confidence))
    assert score == pytest.approx(search.feature_score(confidence))
    if confidence >= 6:
        assert score == pytest.approx(confidence, abs=0.005)
    assert (
        search.feature_score(max(confidence - 0.01, 0.0)) < search.feature_score(confidence) or not confidence
    )


def test_label_keys_fold_case_and_escape_dots() -> None:
    from imagelabels.documents import label_features, label_key

    assert label_key("  Hot   Dog ") == "hot dog"
    assert label_key("St. Bernard") == "st%2E bernard"
    assert label_key("100% Juice") == "100%25 juice"
    assert label_key("a.b") != label_key("a%2Eb")  # one-to-one
    features = label_features([{"Name": "Cat", "Confidence": 80.0}, {"Name": "cat", "Confidence": 90.0}])
    assert list(features) == ["cat"]
    assert math.log(features["cat"]) / 0.8 == pytest.approx(90.0)


def test_fuzzy_label_query_uses_match_fuzziness() -> None:
    match = search.label_query("Piza", fuzzy=True)["nested"]["query"]["function_score"]["query"]["bool"][
        "must"
    ][0]["match"]["Labels.Name"]
    assert match["query"] == "Piza"
    assert match["fuzziness"] == "AUTO"


@pytest.mark.parametrize("hostile", ['Pizza" OR *:*', "Labels.Name:* AND moderated:true", "(a) || b^9 ~2"])
def test_user_input_never_reaches_a_query_string(hostile: str) -> None:
    filters = search.Filters(bucket=hostile, prefix=hostile, since=hostile, exclude_moderated=True)
    queries = [
        search.label_query(hostile, 10, fuzzy=True),
        search._filtered(search.label_query(hostile, fuzzy=True), filters),
    ]
    for query in queries:
        assert not _walk_keys(query) & {"query_string", "simple_query_string"}
        assert hostile in json.dumps(query, ensure_ascii=False).replace('\\"', '"')
    # exact names: the input is one feature name under label_confidence, never a path out of it
    fields = {
        clause["rank_feature"]["field"]
        for clause in [search.label_query(hostile), *search.like_query([(hostile, 50.0)])["bool"]["should"]]
    }
    assert fields == {"label_confidence." + label_key(hostile)}
    assert "." not in label_key(hostile)


def test_filters_become_filter_and_must_not_clauses() -> None:
    filters = search.Filters(
        bucket="photos",
        prefix="2026/11/",
        since=datetime(2026, 11, 2, tzinfo=UTC),
        until="2026-12-01",
        exclude_moderated=True,
    )
    assert filters.clauses() == (
        [
            {"term": {"s3bucket": "photos"}},
            {"prefix": {"s3key.keyword": "2026/11/"}},
            {"range": {"timestamp": {"gte": "2026-11-02T00:00:00+00:00", "lt": "2026-12-01"}}},
        ],
        [{"term": {"moderated": True}}],
    )
    assert search._filtered(None, None) == {"match_all": {}}
    assert search._filtered({"match_all": {}}, search.Filters()) == {"match_all": {}}


def test_like_query_weights_each_label_by_the_examples_confidence() -> None:
    should = search.like_query([("Coffee", 90.0), ("Cup", 50.0)])["bool"]["should"]
    features = [clause["rank_feature"] for clause in should]
    assert [f["field"] for f in features] == ["label_confidence.coffee", "label_confidence.cup"]
    assert [f["boost"] for f in features] == pytest.approx([1.25 * 0.9, 1.25 * 0.5])
    assert {json.dumps(f["log"]) for f in features} == {'{"scaling_factor": 1}'}


class _FakeS3:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], int]] = []

    def generate_presigned_url(self, operation: str, Params: dict[str, Any], ExpiresIn: int) -> str:
        self.calls.append((operation, Params, ExpiresIn))
        return f"https://signed/{Params['Bucket']}/{Params['Key']}?e={ExpiresIn}"


def test_presign_expiry_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeS3()
    monkeypatch.delenv("IMAGELABELS_PRESIGN_SECONDS", raising=False)
    assert search.presigned_url(fake, "s3://b/k/x.jpg") == "https://signed/b/k/x.jpg?e=900"
    monkeypatch.setenv("IMAGELABELS_PRESIGN_SECONDS", "60")
    hits = search.presign_hits(fake, [search.Hit("x.jpg", "s3://b/x.jpg", None, [])])
    assert hits[0].url == "https://signed/b/x.jpg?e=60"
    assert fake.calls[-1] == (
        "get_object",
        {
            "Bucket": "b",
            "Key": "x.jpg",
            "ResponseContentType": "image/jpeg",
            "ResponseContentDisposition": 'inline; filename="x.jpg"',
        },
        60,
    )
    monkeypatch.setenv("IMAGELABELS_PRESIGN_SECONDS", "0")
    with pytest.raises(ValueError, match="PRESIGN_SECONDS"):
        search.presign_seconds()


@pytest.mark.parametrize("uri", ["photos/x.jpg", "s3://", "s3://bucket", "s3://bucket/"])
def test_parse_s3_uri_rejects_incomplete_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://"):
        search.parse_s3_uri(uri)


def test_cli_parses_the_documented_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["search", "--label", "Pizza", "--min-confidence", "90", "--json"])
    assert (args.command, args.label, args.min_confidence, args.json) == ("search", "Pizza", 90.0, True)
    args = parser.parse_args(["search", "--label", "Pizza", "--after", '[92.0, "s3://b/k"]'])
    assert args.after == [92.0, "s3://b/k"]
    assert parser.parse_args(["describe", "chelsea.png"]).title_or_key == "chelsea.png"
    assert parser.parse_args(["like", "s3://b/k.png", "--labeler", "local"]).example == "s3://b/k.png"
    assert parser.parse_args(["top-labels", "--size", "3", "--bucket", "b"]).size == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--label", "Pizza", "--min-confidence", "120"],
        ["search", "--label", "Pizza", "--since", "yesterday"],
        ["search", "--label", "Pizza", "--after", "not json"],
        ["search", "--label", "Pizza", "--size", "0"],
        ["search"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_matched_confidence_falls_back_to_the_nested_offset() -> None:
    source = {
        "title": "t",
        "s3_location": "s3://b/t",
        "Labels": [{"Name": "A", "Confidence": 70.0}, {"Name": "B", "Confidence": 91.5}],
    }
    inner = {"Labels": {"hits": {"hits": [{"_source": {}, "_nested": {"field": "Labels", "offset": 1}}]}}}
    assert search._hit({"_source": source, "inner_hits": inner}).confidence == 91.5
    own = {"Labels": {"hits": {"hits": [{"_source": {"Confidence": 88.0}}]}}}
    assert search._hit({"_source": source, "inner_hits": own}).confidence == 88.0
    assert search._hit({"_source": source}).confidence is None


def test_search_after_guard_compares_scores_as_float32() -> None:
    after = [95.19999694824219, "s3://b/m"]
    assert not search._strictly_after([95.2, "s3://b/m"], after)  # the repeated last hit
    assert not search._strictly_after([95.2, "s3://b/a"], after)
    assert search._strictly_after([95.2, "s3://b/z"], after)
    assert search._strictly_after([80.0, "s3://b/a"], after)
    assert not search._strictly_after([96.0, "s3://b/z"], after)


def test_cli_without_any_connection_settings_says_how_to_give_them(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "IMAGELABELS_ES_URL",
        "AWS_ENDPOINT_URL",
        "AIRFLOW_HOME",
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="--es-url") as exit_info:
        cli.main(["top-labels", "--state", str(tmp_path)])
    assert "stack.json" in str(exit_info.value)


def test_alias_words_expand_to_the_labels_they_stand_for() -> None:
    assert search.label_names_for("kitty") == ["kitty", "Cat"]
    assert "Person" in search.label_names_for("People")
    assert {"Espresso"} <= set(search.label_names_for("coffee"))
    assert search.label_names_for("Pizza") == ["Pizza"]
    query = search.label_query("kitty")["dis_max"]["queries"]
    assert [q["rank_feature"]["field"] for q in query] == ["label_confidence.kitty", "label_confidence.cat"]


def test_a_labels_aliases_are_features_with_its_confidence() -> None:
    from imagelabels.documents import label_features

    features = label_features(
        [
            {
                "Name": "Mobile Phone",
                "Confidence": 90.0,
                "Aliases": [{"Name": "Cell Phone"}, {"Name": "cellphone"}],
            }
        ]
    )
    assert sorted(features) == ["cell phone", "cellphone", "mobile phone"]
    assert len(set(features.values())) == 1


def test_suggestions_offer_alias_words_of_indexed_labels() -> None:
    from imagelabels.webapp import suggestions

    aliases = {"kitty": ["Cat"], "kitten": ["Cat"], "puppy": ["Dog"], "cat": ["Cat"]}
    indexed = [("Cat", 5), ("Catamaran", 1)]
    assert suggestions(indexed, "kit", 8, aliases) == ["kitten", "kitty"]
    assert suggestions(indexed, "ca", 8, {**aliases, "cats": ["Cat"]}) == [
        "Cat",
        "Catamaran",
    ]  # Cat is offered
    assert suggestions(indexed, "pup", 8, aliases) == []  # no Dog indexed: nothing to find
