"""Who may use the node, and what they did: per-user API tokens stored hashed, and an append-only audit log.

Tokens are random 32-byte secrets shown once when created; the node keeps only their SHA-256, so a copy of its
data folder gives no one a working token.  The audit log is one JSON object per line, opened for appending
only: who, what, which study, when, outcome, and never pixels or report text (identifiers only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from ..io.atomic import write_text_atomic
from ..io.errors import InputError

__all__ = ["Audit", "Tokens"]

TOKENS_FILE = "tokens.json"
AUDIT_FILE = "audit.log"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Tokens:
    """The users and their hashed tokens (``DATA/tokens.json``); re-read when the file changes, so a token
    revoked with ``braingemma3d serve tokens revoke`` stops working at the next request."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / TOKENS_FILE
        self._stamp: tuple | None = None
        self._users: dict[str, dict] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = json.loads(self.path.read_text(encoding="utf-8")).get("users", {})
                self._stamp = stamp
            return self._users

    def user(self, token: str | None) -> str | None:
        """The user a token belongs to, or None (missing, unknown or revoked); constant-time comparison."""
        if not token:
            return None
        digest = _digest(token)
        found = None
        for name, entry in self._load().items():
            if hmac.compare_digest(entry.get("sha256", ""), digest) and not entry.get("revoked"):
                found = name
        return found

    def _save(self, users: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps({"users": users}, indent=1) + "\n")
        os.chmod(self.path, 0o600)

    def create(self, user: str) -> str:
        """A new token for ``user`` (replacing any earlier one); returned once, stored hashed."""
        if not user or not all(c.isalnum() or c in "._-@" for c in user) or len(user) > 64:
            raise InputError(f"user name {user!r}: use letters, digits and . _ - @ (at most 64)")
        token = secrets.token_urlsafe(32)
        users = dict(self._load())
        users[user] = {
            "sha256": _digest(token),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._save(users)
        return token

    def revoke(self, user: str) -> None:
        users = dict(self._load())
        if user not in users:
            raise InputError(f"no user {user!r} (see: braingemma3d serve tokens list)")
        users[user] = users[user] | {"revoked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._save(users)

    def listing(self) -> list[dict]:
        return [
            {"user": k, **{f: v.get(f) for f in ("created", "revoked")}}
            for k, v in sorted(self._load().items())
        ]


class Audit:
    """Append-only audit log (``DATA/audit.log``): one JSON line per request and per job event."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / AUDIT_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(
        self,
        who: str,
        action: str,
        outcome: str,
        *,
        job: str | None = None,
        study: str | None = None,
        **extra: object,
    ) -> None:
        """One line: when, who, what, which job and study, how it ended; identifiers only, never pixels or
        report text (callers pass none)."""
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "who": who,
            "action": action,
            "outcome": outcome,
            "job": job,
            "study": study,
            **extra,
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
