"""docs/iam-policy.json grants exactly the AWS actions the code calls, found by AST.

Every attribute in include/, dags/ and plugins/ named like an S3, SQS or Rekognition operation
(botocore's own operation list, so a new call cannot hide), plus the boto3 helpers that wrap
operations (paginators, transfers, presigned URLs), must be in ``CALLS`` below with its IAM
actions; the union of those actions must equal the policy's. A new AWS call without a policy
update, or a policy action no code uses, fails here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "docs" / "iam-policy.json"
SCANNED = ("include", "dags", "plugins")
# Test stand-ins that never run in a deployment (they talk to the local moto server only).
NOT_DEPLOYED = ("include/imagelabels/devstack/standin/", "include/imagelabels/devstack/embedded.py")
# Same-named methods that are not AWS calls: (file, method) -> what it really is.
NOT_AWS = {
    ("include/imagelabels/channels.py", "send_message"): "smtplib.SMTP.send_message",
    ("include/imagelabels/labelers/local.py", "detect_faces"): "the local MTCNN face detector",
}
# boto3 method -> IAM actions it needs. Multipart uploads (upload_file above 8 MB) are PutObject
# plus AbortMultipartUpload on failure; GetObject with VersionId (versioned buckets, preflight and
# Rekognition's S3Object.Version) needs GetObjectVersion; HeadObject is authorized by GetObject.
CALLS: dict[str, set[str]] = {
    "list_objects_v2": {"s3:ListBucket"},
    "head_bucket": {"s3:ListBucket"},
    "head_object": {"s3:GetObject"},
    "get_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "download_file": {"s3:GetObject"},
    "put_object": {"s3:PutObject"},
    "upload_file": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "get_queue_attributes": {"sqs:GetQueueAttributes"},
    "receive_message": {"sqs:ReceiveMessage"},
    "delete_message_batch": {"sqs:DeleteMessage"},
    "change_message_visibility_batch": {"sqs:ChangeMessageVisibility"},
    "detect_labels": {"rekognition:DetectLabels"},
    "detect_moderation_labels": {"rekognition:DetectModerationLabels"},
    "detect_text": {"rekognition:DetectText"},
    "detect_faces": {"rekognition:DetectFaces"},
}
# Helpers whose first argument names the operation they run.
BY_NAME = {"get_paginator", "generate_presigned_url", "can_paginate", "get_waiter"}
TRANSFER = {"upload_file", "upload_fileobj", "download_file", "download_fileobj", "copy"}


def _operation_names() -> set[str]:
    """Python names of every S3, SQS and Rekognition operation botocore knows."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    return {
        xform_name(op)
        for service in ("s3", "sqs", "rekognition")
        for op in session.get_service_model(service).operation_names
    }


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(NOT_DEPLOYED):
                yield relative, ast.parse(path.read_text(encoding="utf-8"), filename=relative)


def aws_calls() -> dict[str, set[str]]:
    """boto3 method name -> 'file:line' of each place the deployed code uses it."""
    operations = _operation_names()
    found: dict[str, set[str]] = {}
    for relative, tree in _sources():
        for node in ast.walk(tree):
            name: str | None = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in BY_NAME
            ):
                first = node.args[0] if node.args else None
                where = f"{relative}:{node.lineno}: {node.func.attr}() with a computed operation name"
                assert isinstance(first, ast.Constant), where
                assert isinstance(first.value, str), where
                name = first.value
            elif isinstance(node, ast.Attribute) and (node.attr in operations or node.attr in TRANSFER):
                name = node.attr
            if name is not None and (relative, name) not in NOT_AWS:
                found.setdefault(name, set()).add(f"{relative}:{getattr(node, 'lineno', 0)}")
    return found


def policy_actions() -> set[str]:
    policy = json.loads(POLICY.read_text(encoding="utf-8"))
    assert policy["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_every_aws_call_is_known_and_the_policy_grants_exactly_their_actions() -> None:
    calls = aws_calls()
    unknown = {name: sorted(where) for name, where in calls.items() if name not in CALLS}
    assert unknown == {}, "new AWS call(s): add their IAM actions to CALLS and docs/iam-policy.json"
    needed = set().union(*(CALLS[name] for name in calls))
    granted = policy_actions()
    assert sorted(needed - granted) == [], "actions the code needs but the policy does not grant"
    assert sorted(granted - needed) == [], "actions the policy grants but no code uses"


def test_the_scan_sees_the_calls_it_must_see() -> None:
    """The AST scan is not vacuous: the calls the pipeline is built on are found where they are."""
    calls = aws_calls()
    assert any(w.startswith("include/imagelabels/sources/listing.py") for w in calls["list_objects_v2"])
    assert any(w.startswith("include/imagelabels/preflight/checks.py") for w in calls["get_object"])
    assert any(w.startswith("include/imagelabels/sources/sqs.py") for w in calls["receive_message"])
    assert any(w.startswith("include/imagelabels/labelers/rekognition.py") for w in calls["detect_labels"])
    assert "send_message" not in calls  # smtplib, allowlisted


def test_no_wildcards_beyond_rekognition_and_resources_scoped_by_placeholders() -> None:
    """Only Rekognition's Detect* (which has no resource-level permissions) uses Resource "*";
    every other statement names its bucket/prefix or queue, and listing is limited to a prefix."""
    policy = json.loads(POLICY.read_text(encoding="utf-8"))
    for statement in policy["Statement"]:
        actions = statement["Action"]
        assert all("*" not in action for action in actions), statement["Sid"]
        resource = statement["Resource"]
        if resource == "*":
            assert {a.split(":")[0] for a in actions} == {"rekognition"}, statement["Sid"]
        else:
            assert "<" in resource, f"{statement['Sid']}: resource not scoped by a placeholder"
        if "s3:ListBucket" in actions:
            assert statement["Condition"]["StringLike"]["s3:prefix"], statement["Sid"]
