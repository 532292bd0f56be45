"""Configuration of the Rekognition stand-in, and its command line (the two must round-trip).

The same :class:`StandInConfig` drives the in-process server used by tests and the separate
process used by benchmarks (``python -m imagelabels.devstack.standin``), so a benchmark can describe the
service it wants once and :func:`~imagelabels.devstack.standin.process.start_standin_process` turns it
into flags with :meth:`StandInConfig.to_argv`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagelabels.devstack.standin.errors import ERRORS

OPERATIONS = ("DetectLabels", "DetectModerationLabels", "DetectText", "DetectFaces")
ALL_OPERATIONS = "*"  # key of tps/burst/error_rates that applies to every operation not named
THROTTLE_CHOICES = ("ThrottlingException", "ProvisionedThroughputExceededException", "alternate")
LABEL_MODES = ("canned", "local")
CANNED_KEYS = (
    "Labels",
    "LabelModelVersion",
    "ImageProperties",
    "ModerationLabels",
    "ModerationModelVersion",
    "TextDetections",
    "TextModelVersion",
    "FaceDetails",
)
MIB = 1024 * 1024


@dataclass(frozen=True)
class StandInConfig:
    """How the stand-in behaves.

    :param host: interface to listen on (loopback by default: it accepts any credentials).
    :param port: TCP port; 0 picks a free one (read it back from ``StandInServer.url``).
    :param latency_ms: service time of a successful answer, counted from the request's arrival
        (time spent reading S3 or running the local model is included, so the service time stays
        what was asked for as long as that work is shorter).
    :param jitter_ms: uniform random extra latency in ``[0, jitter_ms]`` added per answer.
    :param tps: operation -> sustained requests per second; ``"*"`` sets the default for the
        operations not named; operations without a quota are unlimited.
    :param burst: operation -> token bucket capacity; default one second worth (``tps``, at least 1).
    :param throttle_error: error answered when the quota is exceeded; ``"alternate"`` alternates
        ``ThrottlingException`` and ``ProvisionedThroughputExceededException``.
    :param error_rates: operation (or ``"*"``) -> {error code: probability} of injected errors,
        drawn after the quota check; codes from :data:`~imagelabels.devstack.standin.errors.ERRORS`.
    :param seed: seed of the random draws (injected errors, jitter) for reproducible runs.
    :param labels: ``"canned"`` (fixed plausible answers) or ``"local"`` (the local model).
    :param s3_endpoint_url: S3 endpoint (the moto server) that ``Image.S3Object`` is read from.
    :param s3_region: region of the S3 client.
    :param canned: overrides of the canned answers, keyed by response field (:data:`CANNED_KEYS`).
    :param max_bytes: largest ``Image.Bytes`` accepted (Rekognition: 5 MB).
    :param max_s3_bytes: largest S3 object accepted (Rekognition: 15 MB).
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    tps: Mapping[str, float] = field(default_factory=dict)
    burst: Mapping[str, float] = field(default_factory=dict)
    throttle_error: str = "ThrottlingException"
    error_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    seed: int | None = None
    labels: str = "canned"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    canned: Mapping[str, Any] = field(default_factory=dict)
    max_bytes: int = 5 * MIB
    max_s3_bytes: int = 15 * MIB

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must not be negative")
        _check_per_operation("tps", self.tps, positive=True)
        _check_per_operation("burst", self.burst, positive=True)
        for op, rates in self.error_rates.items():
            _check_operation("error_rates", op)
            _check_rates(op, rates)
        if self.throttle_error not in THROTTLE_CHOICES:
            raise ValueError(f"throttle_error must be one of {', '.join(THROTTLE_CHOICES)}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        unknown = sorted(set(self.canned) - set(CANNED_KEYS))
        if unknown:
            raise ValueError(f"unknown canned keys {unknown}; known: {', '.join(CANNED_KEYS)}")
        if self.max_bytes < 1 or self.max_s3_bytes < 1:
            raise ValueError("max_bytes and max_s3_bytes must be positive")

    def tps_for(self, operation: str) -> float | None:
        """Sustained quota of ``operation``; ``None`` means unlimited."""
        return self.tps.get(operation, self.tps.get(ALL_OPERATIONS))

    def burst_for(self, operation: str) -> float:
        """Bucket capacity of ``operation``: configured, else one second worth (at least one token,
        or a quota below 1 TPS would never let anything through)."""
        configured = self.burst.get(operation, self.burst.get(ALL_OPERATIONS))
        if configured is not None:
            return configured
        return max(1.0, self.tps_for(operation) or 1.0)

    def error_rates_for(self, operation: str) -> Mapping[str, float]:
        """Injected error probabilities of ``operation`` (its own entry wins over ``"*"``)."""
        return self.error_rates.get(operation, self.error_rates.get(ALL_OPERATIONS, {}))

    def to_argv(self) -> list[str]:
        """The command-line flags that rebuild this configuration (see :func:`parse_args`)."""
        argv = ["--host", self.host, "--port", str(self.port)]
        argv += ["--latency-ms", repr(self.latency_ms), "--jitter-ms", repr(self.jitter_ms)]
        for op, tps in self.tps.items():
            argv += ["--tps", f"{op}={tps!r}"]
        for op, burst in self.burst.items():
            argv += ["--burst", f"{op}={burst!r}"]
        for op, rates in self.error_rates.items():
            for code, rate in rates.items():
                argv += ["--error-rate", f"{op}:{code}={rate!r}"]
        argv += ["--throttle-error", self.throttle_error, "--labels", self.labels]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        if self.s3_endpoint_url:
            argv += ["--s3-endpoint", self.s3_endpoint_url]
        argv += ["--s3-region", self.s3_region]
        if self.canned:
            argv += ["--canned", json.dumps(dict(self.canned))]
        argv += ["--max-bytes", str(self.max_bytes), "--max-s3-bytes", str(self.max_s3_bytes)]
        return argv


def _check_operation(what: str, op: str) -> None:
    if op != ALL_OPERATIONS and op not in OPERATIONS:
        raise ValueError(f"{what}: unknown operation {op!r}; known: {', '.join(OPERATIONS)} or '*'")


def _check_per_operation(what: str, values: Mapping[str, float], *, positive: bool) -> None:
    for op, value in values.items():
        _check_operation(what, op)
        if positive and not value > 0:
            raise ValueError(f"{what}[{op}] must be positive, got {value}")


def _check_rates(op: str, rates: Mapping[str, float]) -> None:
    for code, rate in rates.items():
        if code not in ERRORS:
            raise ValueError(f"error_rates[{op}]: unknown error {code!r}; known: {', '.join(sorted(ERRORS))}")
        if not 0 <= rate <= 1:
            raise ValueError(f"error_rates[{op}][{code}] must be within 0..1, got {rate}")
    if sum(rates.values()) > 1 + 1e-9:
        raise ValueError(f"error_rates[{op}] add up to more than 1")


def _operation_value(text: str) -> tuple[str, float]:
    """``OP=N`` (or a bare ``N`` for every operation)."""
    op, sep, value = text.rpartition("=")
    try:
        return (op if sep else ALL_OPERATIONS), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OP=NUMBER or NUMBER, got {text!r}") from None


def _error_rate(text: str) -> tuple[str, str, float]:
    """``[OP:]CODE=RATE``."""
    target, sep, value = text.rpartition("=")
    op, _, code = target.rpartition(":")
    try:
        if not sep or not code:
            raise ValueError
        return op or ALL_OPERATIONS, code, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [OP:]CODE=RATE, got {text!r}") from None


def _canned(text: str) -> dict[str, Any]:
    """Inline JSON, or ``@path`` of a JSON file."""
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--canned must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m imagelabels.devstack.standin`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m imagelabels.devstack.standin",
        description="A Rekognition-compatible stand-in server (JSON 1.1 over HTTP) for tests and benchmarks.",
    )
    defaults = StandInConfig()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0: a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--jitter-ms", type=float, default=defaults.jitter_ms)
    parser.add_argument(
        "--tps",
        type=_operation_value,
        action="append",
        default=[],
        metavar="[OP=]N",
        help="quota; repeatable",
    )
    parser.add_argument(
        "--burst",
        type=_operation_value,
        action="append",
        default=[],
        metavar="[OP=]N",
        help="bucket capacity",
    )
    parser.add_argument(
        "--error-rate",
        type=_error_rate,
        action="append",
        default=[],
        metavar="[OP:]CODE=RATE",
        help="injected error probability; repeatable",
    )
    parser.add_argument("--throttle-error", choices=THROTTLE_CHOICES, default=defaults.throttle_error)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--labels", choices=LABEL_MODES, default=defaults.labels)
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint (moto server) for Image.S3Object")
    parser.add_argument("--s3-region", default=defaults.s3_region)
    parser.add_argument(
        "--canned", type=_canned, default={}, metavar="JSON|@FILE", help="canned answer overrides"
    )
    parser.add_argument("--max-bytes", type=int, default=defaults.max_bytes)
    parser.add_argument("--max-s3-bytes", type=int, default=defaults.max_s3_bytes)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> StandInConfig:
    """Build a :class:`StandInConfig` from command-line flags (invalid values exit with usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    error_rates: dict[str, dict[str, float]] = {}
    for op, code, rate in args.error_rate:
        error_rates.setdefault(op, {})[code] = rate
    try:
        return StandInConfig(
            host=args.host,
            port=args.port,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            tps=dict(args.tps),
            burst=dict(args.burst),
            throttle_error=args.throttle_error,
            error_rates=error_rates,
            seed=args.seed,
            labels=args.labels,
            s3_endpoint_url=args.s3_endpoint,
            s3_region=args.s3_region,
            canned=args.canned,
            max_bytes=args.max_bytes,
            max_s3_bytes=args.max_s3_bytes,
        )
    except ValueError as error:
        parser.error(str(error))
