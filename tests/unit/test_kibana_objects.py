"""kibana/imagelabels.ndjson: the saved objects the compose stack imports into Kibana.

Kibana cannot run here, so these are file checks: the ndjson parses, every reference resolves,
every field a visualization uses exists in the index template as a flat (non-nested) field —
Kibana cannot aggregate fields under a ``nested`` mapping — and the compose one-shot service
imports this very file.
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
NDJSON = ROOT / "kibana" / "imagelabels.ndjson"
COMPOSE = ROOT / "docker-compose.yaml"
DATA_VIEW_ID = "imagelabels-images"
# Lens's pseudo-field for "count of documents".
RECORDS = "___records___"
FIELD_KEYS = {"sourceField", "field", "fieldName", "timeFieldName"}


def flatten_mapping(mapping: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Every field path of a mapping -> (type, under a nested field), multi-fields included."""
    paths: dict[str, tuple[str, bool]] = {}

    def walk(properties: Mapping[str, Any], prefix: str, in_nested: bool) -> None:
        for name, spec in properties.items():
            path = f"{prefix}{name}"
            field_type = spec.get("type", "object")
            nested_here = in_nested or field_type == "nested"
            paths[path] = (field_type, nested_here)
            for sub, sub_spec in spec.get("fields", {}).items():
                paths[f"{path}.{sub}"] = (sub_spec["type"], nested_here)
            if "properties" in spec:
                walk(spec["properties"], f"{path}.", nested_here)

    walk(mapping["properties"], "", False)
    return paths


FIELDS = flatten_mapping(IMAGE_MAPPINGS)
FLAT_FIELDS = {
    path: field_type
    for path, (field_type, nested) in FIELDS.items()
    if not nested and field_type not in ("object", "nested")
}


def _load() -> list[dict[str, Any]]:
    objects = []
    for number, line in enumerate(NDJSON.read_text().splitlines(), 1):
        assert line.strip(), f"line {number} is blank (Kibana's import rejects it)"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"line {number} is not a JSON object"
        objects.append(obj)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _load()


def _by_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


def _decode(value: Any) -> Any:
    """Saved objects keep some members as JSON strings (panelsJSON, searchSourceJSON)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    node = _decode(node)
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, _decode(value)
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@-]*)\s*:")


def fields_used(obj: Mapping[str, Any]) -> set[str]:
    """Field names a saved object reads: datasource columns, filters and KQL queries."""
    used: set[str] = set()
    for key, value in _walk(obj["attributes"]):
        if key in FIELD_KEYS and isinstance(value, str):
            used.add(value)
        elif key == "query" and isinstance(value, dict) and value.get("language") == "kuery":
            used.update(_KQL_FIELD.findall(value.get("query", "")))
    used.discard(RECORDS)
    return used


def test_mapping_flattener_knows_nested_paths() -> None:
    assert FIELDS["Labels.Name.keyword"] == ("keyword", True)
    assert FIELDS["ModerationLabels.Name"] == ("text", True)
    assert FIELDS["label_names"] == ("keyword", False)
    assert FIELDS["title.keyword"] == ("keyword", False)
    assert "Labels.Name.keyword" not in FLAT_FIELDS


def test_kql_field_extraction() -> None:
    obj = {"attributes": {"state": {"query": {"language": "kuery", "query": "moderated : true and x.y:1"}}}}
    assert fields_used(obj) == {"moderated", "x.y"}


def test_ndjson_parses_with_unique_ids(objects: list[dict[str, Any]]) -> None:
    keys = [(o["type"], o["id"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert len({o["id"] for o in objects}) == len(objects), "ids are unique across types too"
    for obj in objects:
        assert {"id", "type", "attributes", "references"} <= set(obj), obj.get("id")
        assert obj["attributes"].get("title"), f"{obj['id']} has no title"


def test_every_reference_resolves(objects: list[dict[str, Any]]) -> None:
    known = {(o["type"], o["id"]) for o in objects}
    for obj in objects:
        names = [ref["name"] for ref in obj["references"]]
        assert len(names) == len(set(names)), f"{obj['id']} repeats a reference name"
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref} is not in the file"


def test_data_view_is_the_alias_with_a_date_time_field(objects: list[dict[str, Any]]) -> None:
    (view,) = _by_type(objects, "index-pattern")
    assert view["id"] == DATA_VIEW_ID
    assert view["attributes"]["title"] == INDEX_ALIAS
    assert FLAT_FIELDS[view["attributes"]["timeFieldName"]] == "date"


def test_objects_use_only_flat_mapped_fields(objects: list[dict[str, Any]]) -> None:
    assert len(_by_type(objects, "lens")) >= 5
    for obj in objects:
        used = fields_used(obj)
        if obj["type"] == "lens":
            assert used, f"{obj['id']} uses no field"
        nested = {f for f in used if f in FIELDS and FIELDS[f][1]}
        assert not nested, f"{obj['id']} uses nested fields {nested} (Kibana cannot aggregate them)"
        unknown = used - set(FLAT_FIELDS)
        assert not unknown, f"{obj['id']} uses fields not in IMAGE_MAPPINGS: {unknown}"


def test_lens_layers_reference_the_data_view(objects: list[dict[str, Any]]) -> None:
    for lens in _by_type(objects, "lens"):
        state = lens["attributes"]["state"]
        layers = state["datasourceStates"]["formBased"]["layers"]
        refs = {ref["name"]: ref for ref in lens["references"]}
        for layer_id, layer in layers.items():
            ref = refs[f"indexpattern-datasource-layer-{layer_id}"]
            assert (ref["type"], ref["id"]) == ("index-pattern", DATA_VIEW_ID)
            assert set(layer["columnOrder"]) == set(layer["columns"]), lens["id"]
        # every accessor the chart names is a column of its layer
        accessors = {
            value
            for key, value in _walk(state["visualization"])
            if key in ("xAccessor", "splitAccessor", "tagAccessor", "valueAccessor", "columnId")
        }
        accessors |= {
            item
            for key, value in _walk(state["visualization"])
            if key in ("accessors", "primaryGroups", "metrics")
            for item in value
        }
        columns = {c for layer in layers.values() for c in layer["columns"]}
        assert accessors, f"{lens['id']} names no accessor"
        assert accessors <= columns, f"{lens['id']}: {accessors - columns}"


def test_expected_panels(objects: list[dict[str, Any]]) -> None:
    def columns(lens_id: str) -> list[dict[str, Any]]:
        (lens,) = [o for o in objects if o["id"] == lens_id]
        layers = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        return [c for layer in layers.values() for c in layer["columns"].values()]

    def ops(lens_id: str) -> set[tuple[str, str]]:
        return {(c["operationType"], c["sourceField"]) for c in columns(lens_id)}

    assert ("terms", "label_names") in ops("imagelabels-top-labels")
    assert ("terms", "label_names") in ops("imagelabels-label-share")
    assert ("terms", "label_names") in ops("imagelabels-label-cloud")
    assert ("date_histogram", "timestamp") in ops("imagelabels-images-over-time")
    assert ("terms", "moderation_names") in ops("imagelabels-moderation-hits")
    kinds = {o["id"]: o["attributes"]["visualizationType"] for o in _by_type(objects, "lens")}
    assert kinds["imagelabels-label-share"] == "lnsPie"
    assert kinds["imagelabels-label-cloud"] == "lnsTagcloud"


def test_dashboard_places_every_visualization(objects: list[dict[str, Any]]) -> None:
    (dashboard,) = _by_type(objects, "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {ref["name"]: ref for ref in dashboard["references"]}
    assert [p["panelRefName"] for p in panels] == list(refs)
    assert len({p["panelIndex"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridData"]["i"] == panel["panelIndex"]
        assert panel["gridData"]["x"] + panel["gridData"]["w"] <= 48
        assert panel["type"] == refs[panel["panelRefName"]]["type"]
    placed = {(ref["type"], ref["id"]) for ref in refs.values()}
    assert placed == {("lens", o["id"]) for o in _by_type(objects, "lens")}
    json.loads(dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    json.loads(dashboard["attributes"]["optionsJSON"])


# Attribute names Kibana 8.15 accepts; its dashboard schema forbids unknown ones.
ALLOWED_ATTRIBUTES = {
    "dashboard": {
        "title",
        "description",
        "kibanaSavedObjectMeta",
        "timeRestore",
        "timeFrom",
        "timeTo",
        "refreshInterval",
        "controlGroupInput",
        "panelsJSON",
        "optionsJSON",
        "hits",
        "version",
    },
    "index-pattern": {
        "title",
        "name",
        "type",
        "typeMeta",
        "timeFieldName",
        "sourceFilters",
        "fields",
        "fieldFormatMap",
        "fieldAttrs",
        "runtimeFieldMap",
        "allowNoIndex",
    },
    "lens": {"title", "description", "visualizationType", "state"},
}


def test_attributes_are_ones_kibana_knows(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        extra = set(obj["attributes"]) - ALLOWED_ATTRIBUTES[obj["type"]]
        assert not extra, f"{obj['id']}: unknown attributes {extra}"


def test_compose_imports_the_file() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    setup = services["kibana-setup"]
    assert setup["restart"] == "no"
    assert "kibana" in setup["depends_on"]
    assert "./kibana:/kibana:ro" in setup["volumes"]
    script = " ".join(setup["command"]) if isinstance(setup["command"], list) else setup["command"]
    assert "http://kibana:5601/api/status" in script
    assert "/api/saved_objects/_import?overwrite=true" in script
    assert "kbn-xsrf: true" in script
    assert f"file=@/kibana/{NDJSON.name}" in script
