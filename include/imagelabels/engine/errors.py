"""Engine errors, the same classes whichever client is in use.

Callers catch these, never ``elasticsearch.*`` or ``opensearchpy.*`` exceptions: each engine
translates its client's exceptions in one place (:meth:`SearchEngine._translate`), so a
``resource_already_exists_exception`` or a missing index reads the same on Elasticsearch,
OpenSearch and noida-db.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """An answer the engine gave (``status`` set) or a request it never answered (``None``).

    ``error_type`` is the engine's own error name (``index_not_found_exception``...), ``reason``
    its sentence; ``body`` the parsed reply when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str = "",
        reason: str = "",
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.reason = reason
        self.body = body

    @property
    def message(self) -> str:
        return str(self)


class BadRequestError(EngineError):
    """400: the request is wrong (mapping conflict, index exists, bad query)."""


class AuthorizationError(EngineError):
    """401/403: wrong credentials, a bad SigV4 signature, or a policy that does not allow it."""


class NotFoundError(EngineError):
    """404: a missing index or document."""


class ConflictError(EngineError):
    """409: a version conflict or a ``create`` of an existing id."""


class EngineUnavailableError(EngineError):
    """No answer (refused, timed out, TLS failure) or a 502/503/504: worth retrying later."""


class UnsupportedOperationError(EngineError):
    """The engine cannot do this at all (an OpenSearch Serverless limit), said before any write."""


def error_for_status(status: int | None) -> type[EngineError]:
    """The error class for an HTTP status (``None``: the request got no answer)."""
    if status is None:
        return EngineUnavailableError
    return {
        400: BadRequestError,
        401: AuthorizationError,
        403: AuthorizationError,
        404: NotFoundError,
        409: ConflictError,
        502: EngineUnavailableError,
        503: EngineUnavailableError,
        504: EngineUnavailableError,
    }.get(status, EngineError)


def describe_body(body: Any) -> tuple[str, str]:
    """``(error_type, reason)`` from an engine's JSON error reply, whatever its shape."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            root = error.get("root_cause") or []
            first = root[0] if root and isinstance(root[0], dict) else {}
            return str(error.get("type") or first.get("type") or ""), str(
                error.get("reason") or first.get("reason") or ""
            )
        if isinstance(error, str):
            return error, str(body.get("message") or body.get("reason") or error)
        if "message" in body:  # AWS answers ({"message": "..."}) and some proxies
            return "", str(body["message"])
    if isinstance(body, str | bytes):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return "", text[:500]
    return "", ""
