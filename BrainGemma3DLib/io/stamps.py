"""Digests and timestamps that go into every output, made one way everywhere.

Why one place: report.json, the signing audit and the checkpoint identity all promise "the SHA-256 of these
bytes" and "this moment in UTC"; two helpers that format them differently would make records that do not
compare.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import datetime, timezone


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_files(paths: Sequence[str | os.PathLike]) -> str:
    """Hex SHA-256 over the bytes of ``paths`` in order (one digest for a multi-file source), streamed."""
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def utc_iso(moment: datetime | None = None) -> str:
    """``moment`` (default: now) in UTC, ISO 8601 to the second: ``2026-11-23T08:00:00Z``."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
