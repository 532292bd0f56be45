"""opensearch-dashboards/imagelabels.ndjson: the saved objects the `opensearch` compose profile
imports into OpenSearch Dashboards 2.x.

OpenSearch Dashboards forked from Kibana 7.10: it cannot import Kibana 8's Lens objects, so this
file holds the same panels as kibana/imagelabels.ndjson as classic 7.10-format visualizations
(``visState`` with ``aggs``). OpenSearch Dashboards is not run here; these are file checks:

* every line parses, ids are unique, every reference resolves inside the file;
* every field an aggregation, the time field or a KQL query reads is in the index template
  (``imagelabels.documents.IMAGE_MAPPINGS``), not under a ``nested`` field (classic
  visualizations cannot aggregate those), and of a type the aggregation accepts;
* the embedded JSON (``visState``, ``searchSourceJSON``, ``panelsJSON``, ``optionsJSON``,
  ``uiStateJSON``) parses, and the attributes are ones OpenSearch Dashboards' strict saved-object
  mappings accept;
* ``migrationVersion`` is present and no newer than OpenSearch Dashboards' last migration of the
  type (an import of a "newer" object fails), with no Kibana 8-only keys;
* panel for panel, the same titles, aggregations, sizes, queries and dashboard layout as the
  Kibana set, read from kibana/imagelabels.ndjson;
* the compose one-shot service imports this very file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagelabels.documents import IMAGE_MAPPINGS, INDEX_ALIAS

ROOT = Path(__file__).resolve().parents[2]
NDJSON = ROOT / "opensearch-dashboards" / "imagelabels.ndjson"
KIBANA_NDJSON = ROOT / "kibana" / "imagelabels.ndjson"
COMPOSE = ROOT / "docker-compose.yaml"
INDEX_PATTERN_ID = "imagelabels-images"
INDEX_REF_NAME = "kibanaSavedObjectMeta.searchSourceJSON.index"

# The last migration OpenSearch Dashboards 2.x registers for each type (its saved-object
# migrations stop at the Kibana 7.10 fork). An object stamped newer than this is refused on
# import; one stamped older is migrated again on import.
LATEST_MIGRATION = {"index-pattern": "7.6.0", "visualization": "7.10.0", "dashboard": "7.9.3"}
# Kibana 8 root keys that the 7.10 format does not have.
KIBANA8_ONLY_KEYS = {"coreMigrationVersion", "typeMigrationVersion", "managed"}
ROOT_KEYS = {"id", "type", "attributes", "references", "migrationVersion"}

# Attribute names of each type's saved-object mapping in OpenSearch Dashboards 2.x; the
# .kibana index is `dynamic: strict`, so any other attribute fails the import (index-pattern is
# `dynamic: false`, listed here with the attributes its code reads).
ALLOWED_ATTRIBUTES = {
    "index-pattern": {
        "title",
        "type",
        "typeMeta",
        "timeFieldName",
        "intervalName",
        "sourceFilters",
        "fields",
        "fieldFormatMap",
    },
    "visualization": {
        "title",
        "description",
        "kibanaSavedObjectMeta",
        "savedSearchRefName",
        "uiStateJSON",
        "version",
        "visState",
    },
    "dashboard": {
        "title",
        "description",
        "hits",
        "kibanaSavedObjectMeta",
        "optionsJSON",
        "panelsJSON",
        "refreshInterval",
        "timeFrom",
        "timeRestore",
        "timeTo",
        "version",
    },
}

# Classic visualization types and the agg schemas each one takes.
VIS_SCHEMAS = {
    "horizontal_bar": {"metric", "segment", "group", "split"},
    "histogram": {"metric", "segment", "group", "split"},
    "line": {"metric", "segment", "group", "split"},
    "pie": {"metric", "segment", "split"},
    "tagcloud": {"metric", "segment"},
    "table": {"metric", "bucket", "split"},
    "metric": {"metric", "group"},
}
XY_TYPES = {"horizontal_bar", "histogram", "line"}
# Which mapping types a bucket aggregation accepts (text fields are not aggregatable).
AGG_FIELD_TYPES = {
    "terms": {"keyword", "boolean", "integer", "long", "float", "double", "date", "ip"},
    "date_histogram": {"date"},
    "histogram": {"integer", "long", "float", "double"},
    "avg": {"integer", "long", "float", "double"},
    "sum": {"integer", "long", "float", "double"},
    "min": {"integer", "long", "float", "double", "date"},
    "max": {"integer", "long", "float", "double", "date"},
    "cardinality": {"keyword", "boolean", "integer", "long", "float", "double", "date", "ip"},
}
# Lens visualization -> the classic type that draws the same chart.
LENS_TO_CLASSIC = {
    ("lnsXY", "bar_horizontal"): "horizontal_bar",
    ("lnsXY", "bar_stacked"): "histogram",
    ("lnsXY", "bar"): "histogram",
    ("lnsXY", "line"): "line",
    ("lnsPie", None): "pie",
    ("lnsTagcloud", None): "tagcloud",
    ("lnsDatatable", None): "table",
    ("lnsMetric", None): "metric",
}


def flatten_mapping(mapping: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Every field path of a mapping -> (type, aggregatable from the root).

    Fields under a ``nested`` mapping are not, unless the nested field copies them to the root
    document (``include_in_root``; ``include_in_parent`` at the top level does the same).
    """
    paths: dict[str, tuple[str, bool]] = {}

    def walk(properties: Mapping[str, Any], prefix: str, at_root: bool) -> None:
        for name, spec in properties.items():
            path = f"{prefix}{name}"
            field_type = spec.get("type", "object")
            here = at_root
            if field_type == "nested":
                here = at_root and bool(
                    spec.get("include_in_root") or (not prefix and spec.get("include_in_parent"))
                )
            paths[path] = (field_type, here)
            for sub, sub_spec in spec.get("fields", {}).items():
                paths[f"{path}.{sub}"] = (sub_spec["type"], here)
            if "properties" in spec:
                walk(spec["properties"], f"{path}.", here)

    walk(mapping["properties"], "", True)
    return paths


FIELDS = flatten_mapping(IMAGE_MAPPINGS)
ROOT_FIELDS = {
    path: field_type
    for path, (field_type, at_root) in FIELDS.items()
    if at_root and field_type not in ("object", "nested")
}


def _load(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n"), f"{path.name} must end with a newline"
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        assert line.strip(), f"{path.name} line {number} is blank (the import rejects it)"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"{path.name} line {number} is not a JSON object"
        objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _load(NDJSON)


@pytest.fixture(scope="module")
def kibana() -> list[dict[str, Any]]:
    return _load(KIBANA_NDJSON)


def _by_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


def _by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in objects}


def _json_attr(obj: Mapping[str, Any], *path: str) -> Any:
    """An attribute that saved objects keep as a JSON string, parsed; fails with its location."""
    value: Any = obj["attributes"]
    for key in path:
        value = value[key]
    assert isinstance(value, str), f"{obj['id']}: {'.'.join(path)} must be a JSON string"
    try:
        return json.loads(value)
    except ValueError as error:
        pytest.fail(f"{obj['id']}: {'.'.join(path)} is not valid JSON ({error})")


def vis_state(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _json_attr(obj, "visState")


def search_source(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _json_attr(obj, "kibanaSavedObjectMeta", "searchSourceJSON")


_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@-]*)\s*:")


def kql_fields(query: Mapping[str, Any]) -> set[str]:
    assert query.get("language") == "kuery", query
    return set(_KQL_FIELD.findall(query.get("query", "")))


def agg_fields(state: Mapping[str, Any]) -> dict[str, str]:
    """agg id -> field, for every aggregation that reads a field."""
    return {agg["id"]: agg["params"]["field"] for agg in state["aggs"] if "field" in agg.get("params", {})}


def _semver(version: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    assert match, f"{version!r} is not a x.y.z version"
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


# --- the mapping reader itself ---------------------------------------------------------------


def test_mapping_flattener_knows_nested_and_root_paths() -> None:
    assert FIELDS["label_names"] == ("keyword", True)
    assert FIELDS["timestamp"] == ("date", True)
    assert FIELDS["Labels.Name.keyword"][0] == "keyword"
    assert ROOT_FIELDS["title.keyword"] == "keyword"
    nested = {"type": "nested", "properties": {"Name": {"type": "keyword"}}}
    assert flatten_mapping({"properties": {"L": nested}})["L.Name"] == ("keyword", False)
    copied = {**nested, "include_in_root": True}
    assert flatten_mapping({"properties": {"L": copied}})["L.Name"] == ("keyword", True)
    deeper = {"properties": {"a": {"type": "nested", "properties": {"b": copied}}}}
    assert flatten_mapping(deeper)["a.b.Name"] == ("keyword", False), "only a path to the root counts"


def test_kql_field_extraction() -> None:
    assert kql_fields({"language": "kuery", "query": "moderated : true and x.y:1"}) == {"moderated", "x.y"}
    assert kql_fields({"language": "kuery", "query": ""}) == set()


# --- the file as a whole ---------------------------------------------------------------------


def test_ndjson_parses_with_unique_ids(objects: list[dict[str, Any]]) -> None:
    ids = [o["id"] for o in objects]
    assert len(ids) == len(set(ids)), "ids are unique across types too"
    for obj in objects:
        assert set(obj) >= ROOT_KEYS, f"{obj.get('id')} lacks {ROOT_KEYS - set(obj)}"
        assert not set(obj) & KIBANA8_ONLY_KEYS, (
            f"{obj['id']} has Kibana 8 keys {set(obj) & KIBANA8_ONLY_KEYS}"
        )
        assert set(obj) <= ROOT_KEYS | {"updated_at", "version", "namespaces"}, obj["id"]
        assert obj["type"] in ALLOWED_ATTRIBUTES, f"{obj['id']}: type {obj['type']!r}"
        assert re.fullmatch(r"[a-z0-9-]+", obj["id"]), obj["id"]
        assert obj["attributes"].get("title"), f"{obj['id']} has no title"


def test_every_reference_resolves(objects: list[dict[str, Any]]) -> None:
    known = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        names = [ref["name"] for ref in obj["references"]]
        assert len(names) == len(set(names)), f"{obj['id']} repeats a reference name"
        for ref in obj["references"]:
            assert set(ref) == {"id", "name", "type"}, ref
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref} is not in the file"


def test_migration_versions_are_710_compatible(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        versions = obj["migrationVersion"]
        assert isinstance(versions, dict), obj["id"]
        assert list(versions) == [obj["type"]], f"{obj['id']}: migrationVersion must name its own type only"
        stamped = _semver(versions[obj["type"]])
        latest = _semver(LATEST_MIGRATION[obj["type"]])
        assert (7, 0, 0) <= stamped <= latest, (
            f"{obj['id']}: migrationVersion {versions} is outside 7.0.0..{LATEST_MIGRATION[obj['type']]}"
        )
        # equal to the last migration: the import stores it as it is, nothing re-run on it
        assert stamped == latest, f"{obj['id']}: stamp it {LATEST_MIGRATION[obj['type']]}"


def test_attributes_are_ones_opensearch_dashboards_knows(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        extra = set(obj["attributes"]) - ALLOWED_ATTRIBUTES[obj["type"]]
        assert not extra, f"{obj['id']}: unknown attributes {extra}"
        meta = obj["attributes"].get("kibanaSavedObjectMeta")
        if meta is not None:
            assert set(meta) == {"searchSourceJSON"}, obj["id"]


def test_index_pattern_is_the_alias_with_a_date_time_field(objects: list[dict[str, Any]]) -> None:
    (pattern,) = _by_type(objects, "index-pattern")
    assert pattern["id"] == INDEX_PATTERN_ID
    attributes = pattern["attributes"]
    assert attributes["title"] == INDEX_ALIAS
    assert ROOT_FIELDS[attributes["timeFieldName"]] == "date"
    # an empty field list makes OpenSearch Dashboards read the fields from the index on first use
    assert json.loads(attributes["fields"]) == []
    json.loads(attributes["fieldFormatMap"])
    json.loads(attributes["sourceFilters"])


# --- visualizations --------------------------------------------------------------------------


def test_visualizations_are_valid_classic_objects(objects: list[dict[str, Any]]) -> None:
    visualizations = _by_type(objects, "visualization")
    assert len(visualizations) >= 5
    for vis in visualizations:
        state = vis_state(vis)
        assert set(state) == {"title", "type", "aggs", "params"}, vis["id"]
        assert state["title"] == vis["attributes"]["title"], vis["id"]
        assert state["type"] in VIS_SCHEMAS, f"{vis['id']}: {state['type']!r} is not a classic type"
        assert isinstance(_json_attr(vis, "uiStateJSON"), dict)
        assert vis["attributes"]["version"] == 1
        ids = [agg["id"] for agg in state["aggs"]]
        assert len(ids) == len(set(ids)), f"{vis['id']} repeats an agg id"
        metrics = {agg["id"] for agg in state["aggs"] if agg["schema"] == "metric"}
        assert metrics, f"{vis['id']} has no metric"
        for agg in state["aggs"]:
            assert agg["enabled"] is True, vis["id"]
            assert agg["schema"] in VIS_SCHEMAS[state["type"]], f"{vis['id']}: schema {agg['schema']}"
            if agg["type"] == "terms":
                params = agg["params"]
                assert params["orderBy"] in metrics | {"_key"}, f"{vis['id']}: orderBy {params['orderBy']}"
                assert params["order"] in ("asc", "desc")
                assert isinstance(params["size"], int)
                assert params["size"] > 0
        if state["type"] in XY_TYPES:
            axes = {axis["id"] for axis in state["params"]["valueAxes"]}
            for series in state["params"]["seriesParams"]:
                assert series["data"]["id"] in metrics, f"{vis['id']}: series of a missing metric"
                assert series["valueAxis"] in axes, f"{vis['id']}: series on a missing axis"


def test_visualizations_read_the_index_pattern_through_references(objects: list[dict[str, Any]]) -> None:
    for vis in _by_type(objects, "visualization"):
        source = search_source(vis)
        assert "index" not in source, f"{vis['id']}: the index belongs in references (indexRefName)"
        assert source["indexRefName"] == INDEX_REF_NAME
        refs = {ref["name"]: ref for ref in vis["references"]}
        assert (refs[INDEX_REF_NAME]["type"], refs[INDEX_REF_NAME]["id"]) == (
            "index-pattern",
            INDEX_PATTERN_ID,
        )
        assert source["filter"] == []
        kql_fields(source["query"])  # KQL, the language the query bar shows


def test_visualizations_use_only_root_level_mapped_fields(objects: list[dict[str, Any]]) -> None:
    for vis in _by_type(objects, "visualization"):
        state = vis_state(vis)
        used = agg_fields(state)
        assert used, f"{vis['id']} aggregates no field"
        for agg in state["aggs"]:
            field = agg.get("params", {}).get("field")
            if field is None:
                assert agg["type"] == "count", f"{vis['id']}: {agg['type']} without a field"
                continue
            assert field in FIELDS, f"{vis['id']}: {field!r} is not in IMAGE_MAPPINGS"
            assert FIELDS[field][1], f"{vis['id']}: {field!r} is under a nested field (not aggregatable)"
            assert ROOT_FIELDS[field] in AGG_FIELD_TYPES[agg["type"]], (
                f"{vis['id']}: {agg['type']} cannot aggregate {field!r} ({ROOT_FIELDS[field]})"
            )
        queried = kql_fields(search_source(vis)["query"])
        unknown = queried - set(ROOT_FIELDS)
        assert not unknown, f"{vis['id']} queries fields not in IMAGE_MAPPINGS (or nested): {unknown}"


# --- the same panels as the Kibana set --------------------------------------------------------


def _lens_columns(lens: Mapping[str, Any]) -> list[dict[str, Any]]:
    layers = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    return [layer["columns"][column] for layer in layers.values() for column in layer["columnOrder"]]


def _lens_buckets(lens: Mapping[str, Any]) -> list[tuple[str, str, int | None, bool]]:
    return sorted(
        (c["operationType"], c["sourceField"], c["params"].get("size"), bool(c["params"].get("otherBucket")))
        for c in _lens_columns(lens)
        if c["isBucketed"]
    )


def _classic_buckets(state: Mapping[str, Any]) -> list[tuple[str, str, int | None, bool]]:
    return sorted(
        (a["type"], a["params"]["field"], a["params"].get("size"), bool(a["params"].get("otherBucket")))
        for a in state["aggs"]
        if a["schema"] != "metric"
    )


def _lens_chart(lens: Mapping[str, Any]) -> str:
    attributes = lens["attributes"]
    kind = attributes["visualizationType"]
    series = None
    if kind == "lnsXY":
        (series,) = {layer["seriesType"] for layer in attributes["state"]["visualization"]["layers"]}
    return LENS_TO_CLASSIC[(kind, series)]


def test_same_panels_as_the_kibana_set(objects: list[dict[str, Any]], kibana: list[dict[str, Any]]) -> None:
    lenses = _by_id(_by_type(kibana, "lens"))
    visualizations = _by_id(_by_type(objects, "visualization"))
    assert set(visualizations) == set(lenses), "one visualization per Kibana Lens panel, same ids"
    for vis_id, lens in lenses.items():
        vis = visualizations[vis_id]
        state = vis_state(vis)
        assert vis["attributes"]["title"] == lens["attributes"]["title"], vis_id
        assert vis["attributes"]["description"] == lens["attributes"]["description"], vis_id
        assert state["type"] == _lens_chart(lens), f"{vis_id}: {state['type']} draws another chart"
        assert _classic_buckets(state) == _lens_buckets(lens), f"{vis_id}: other buckets than in Kibana"
        lens_metrics = sorted(c["operationType"] for c in _lens_columns(lens) if not c["isBucketed"])
        metrics = sorted(a["type"] for a in state["aggs"] if a["schema"] == "metric")
        assert metrics == lens_metrics, vis_id
        lens_query = lens["attributes"]["state"]["query"]
        assert search_source(vis)["query"] == {
            "query": lens_query["query"],
            "language": lens_query["language"],
        }
        labels = {a["params"].get("customLabel") for a in state["aggs"]}
        assert labels == {c["label"] for c in _lens_columns(lens)}, f"{vis_id}: other axis/column labels"


def test_stacked_and_split_like_kibana(objects: list[dict[str, Any]]) -> None:
    over_time = vis_state(_by_id(objects)["imagelabels-images-over-time"])
    assert {s["mode"] for s in over_time["params"]["seriesParams"]} == {"stacked"}
    schemas = {a["type"]: a["schema"] for a in over_time["aggs"]}
    assert schemas == {"count": "metric", "date_histogram": "segment", "terms": "group"}
    pie = vis_state(_by_id(objects)["imagelabels-label-share"])
    assert pie["params"]["isDonut"] is False
    top = vis_state(_by_id(objects)["imagelabels-top-labels"])
    assert top["params"]["addLegend"] is False
    assert top["params"]["labels"]["show"] is True


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_places_every_visualization_once(objects: list[dict[str, Any]]) -> None:
    (dashboard,) = _by_type(objects, "dashboard")
    panels = _json_attr(dashboard, "panelsJSON")
    refs = {ref["name"]: ref for ref in dashboard["references"]}
    assert [p["panelRefName"] for p in panels] == list(refs), "one panel per reference, in order"
    assert len({p["panelIndex"] for p in panels}) == len(panels)
    for panel in panels:
        assert set(panel) == {"version", "gridData", "panelIndex", "embeddableConfig", "panelRefName"}, panel
        grid = panel["gridData"]
        assert grid["i"] == panel["panelIndex"]
        assert min(grid["x"], grid["y"]) >= 0
        assert min(grid["w"], grid["h"]) > 0
        assert grid["x"] + grid["w"] <= 48
        # 7.3 <= version <= 7.10.x: an older one makes the dashboard app re-migrate the panel
        # (OpenSearch Dashboards' own 1.x/2.x numbers would count as older than 7.3)
        assert (7, 3, 0) <= _semver(panel["version"]) < (7, 11, 0), panel["version"]
    placed = [(ref["type"], ref["id"]) for ref in refs.values()]
    assert sorted(placed) == sorted(("visualization", o["id"]) for o in _by_type(objects, "visualization"))
    assert len(placed) == len(set(placed)), "each visualization once"
    assert search_source(dashboard) == {"query": {"query": "", "language": "kuery"}, "filter": []}
    assert isinstance(_json_attr(dashboard, "optionsJSON"), dict)
    assert dashboard["attributes"]["timeRestore"] is True


def test_dashboard_matches_the_kibana_dashboard(
    objects: list[dict[str, Any]], kibana: list[dict[str, Any]]
) -> None:
    (ours,) = _by_type(objects, "dashboard")
    (theirs,) = _by_type(kibana, "dashboard")
    assert ours["id"] == theirs["id"]
    for key in ("title", "timeFrom", "timeTo", "timeRestore", "refreshInterval"):
        assert ours["attributes"][key] == theirs["attributes"][key], key

    def layout(dashboard: Mapping[str, Any], objs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        titles = {o["id"]: o["attributes"]["title"] for o in objs}
        refs = {ref["name"]: ref["id"] for ref in dashboard["references"]}
        panels = json.loads(dashboard["attributes"]["panelsJSON"])
        return {titles[refs[p["panelRefName"]]]: p["gridData"] for p in panels}

    assert layout(ours, objects) == layout(theirs, kibana), "same panel titles in the same places"


def test_no_field_hides_in_an_unchecked_key(objects: list[dict[str, Any]]) -> None:
    """Field names appear only where the checks above look (agg params, time field, KQL)."""
    for vis in _by_type(objects, "visualization"):
        state = vis_state(vis)
        for key, value in _walk(state["params"]):
            assert key not in ("field", "fieldName", "sourceField"), f"{vis['id']}: params.{key}={value}"


# --- compose ---------------------------------------------------------------------------------


def test_compose_imports_the_file() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    setup = services["opensearch-dashboards-setup"]
    assert setup["profiles"] == ["opensearch"]
    assert setup["restart"] == "no"
    assert "opensearch-dashboards" in setup["depends_on"]
    assert "./opensearch-dashboards:/opensearch-dashboards:ro" in setup["volumes"]
    script = " ".join(setup["command"]) if isinstance(setup["command"], list) else setup["command"]
    assert "http://opensearch-dashboards:5601/api/status" in script
    assert "http://opensearch-dashboards:5601/api/saved_objects/_import?overwrite=true" in script
    assert '-H "osd-xsrf: true"' in script
    assert f"file=@/opensearch-dashboards/{NDJSON.name}" in script
    assert "grep -q '\"success\":true'" in script, "a failed import must fail the one-shot service"
