"""Jobs, their progress events and the workers, kept in the broker's Redis (shared by every machine).

Why in Redis and not in the API process: a department may run the API on one machine and workers on others,
and any of them may be killed; the job's state, its events (what the panel's progress bar shows) and the
stamps that prevent drafting one study twice must outlive each of them.  The queue itself is Celery's
(:mod:`.tasks`); this module only records.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

__all__ = ["STATES", "JobStore"]

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
_P = "bg3d:"


def _now() -> float:
    return round(time.time(), 3)


class JobStore:
    """Job records (``bg3d:job:ID`` hashes), per-user indexes, events and worker heartbeats."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)

    # --- jobs ----------------------------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        *,
        source: str,
        inputs: list[str],
        options: dict,
        study: str = "",
        input_sha256: str = "",
    ) -> str:
        job = secrets.token_hex(8)
        record = {
            "id": job,
            "owner": owner,
            "source": source,
            "state": "queued",
            "stage": "queued",
            "fraction": 0.0,
            "message": "waiting for a worker",
            "created": _now(),
            "updated": _now(),
            "study": study,
            "input_sha256": input_sha256,
            "inputs": json.dumps(inputs),
            "options": json.dumps(options),
            "error": "",
            "worker": "",
            "results": "",
            "sent_to_pacs": "",
            "fetched": "",
        }
        pipe = self.r.pipeline()
        pipe.hset(f"{_P}job:{job}", mapping={k: str(v) for k, v in record.items()})
        pipe.zadd(f"{_P}user:{owner}", {job: record["created"]})
        pipe.zadd(f"{_P}jobs", {job: record["created"]})
        pipe.execute()
        self.event(job, "queued", 0.0, "waiting for a worker")
        return job

    def get(self, job: str) -> dict | None:
        raw = self.r.hgetall(f"{_P}job:{job}")
        if not raw:
            return None
        out: dict = dict(raw)
        out["fraction"] = float(out.get("fraction") or 0.0)
        for key in ("created", "updated"):
            out[key] = float(out.get(key) or 0.0)
        out["inputs"] = json.loads(out.get("inputs") or "[]")
        out["options"] = json.loads(out.get("options") or "{}")
        return out

    def update(self, job: str, **fields) -> None:
        fields["updated"] = _now()
        self.r.hset(f"{_P}job:{job}", mapping={k: str(v) for k, v in fields.items()})

    def claim(self, job: str, worker: str) -> dict | None:
        """Mark ``job`` running on ``worker`` unless it is already finished or cancelled (a redelivered job
        that was done before its worker died is not done again); returns the record or None."""
        key = f"{_P}job:{job}"
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if state is None or state in FINAL:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hset(key, mapping={"state": "running", "worker": worker, "updated": str(_now())})
                    pipe.execute()
                    break
                except Exception as exc:  # a concurrent change: read again
                    if type(exc).__name__ != "WatchError":
                        raise
        return self.get(job)

    def jobs_of(self, owner: str) -> list[dict]:
        return [j for j in (self.get(i) for i in self.r.zrange(f"{_P}user:{owner}", 0, -1)) if j]

    def all_jobs(self) -> list[dict]:
        return [j for j in (self.get(i) for i in self.r.zrange(f"{_P}jobs", 0, -1)) if j]

    def active_count(self, owner: str) -> int:
        return sum(j["state"] in ("queued", "running") for j in self.jobs_of(owner))

    def forget(self, job: str) -> None:
        record = self.get(job)
        pipe = self.r.pipeline()
        pipe.delete(f"{_P}job:{job}", f"{_P}events:{job}")
        pipe.zrem(f"{_P}jobs", job)
        if record:
            pipe.zrem(f"{_P}user:{record['owner']}", job)
        pipe.execute()

    # --- cancel --------------------------------------------------------------------------------------
    def cancel(self, job: str) -> bool:
        record = self.get(job)
        if record is None or record["state"] in FINAL:
            return False
        self.r.set(f"{_P}cancel:{job}", "1", ex=7 * 24 * 3600)
        if record["state"] == "queued":
            self.update(job, state="cancelled", stage="cancelled", message="cancelled before it started")
            self.event(job, "cancelled", record["fraction"], "cancelled")
        return True

    def cancel_requested(self, job: str) -> bool:
        return bool(self.r.exists(f"{_P}cancel:{job}"))

    # --- stamps: one result per input, checkpoint and options ----------------------------------------------
    def done_with_stamp(self, stamp: str) -> str | None:
        return self.r.get(f"{_P}stamp:{stamp}")

    def remember_stamp(self, stamp: str, job: str) -> None:
        self.r.set(f"{_P}stamp:{stamp}", job)

    def forget_stamp(self, stamp: str) -> None:
        self.r.delete(f"{_P}stamp:{stamp}")

    # --- events (the progress the panel shows) --------------------------------------------------------
    def event(self, job: str, stage: str, fraction: float, message: str, **extra) -> None:
        item = {
            "time": _now(),
            "stage": stage,
            "fraction": round(float(fraction), 4),
            "message": message,
            **extra,
        }
        self.r.rpush(f"{_P}events:{job}", json.dumps(item))
        self.r.hset(
            f"{_P}job:{job}",
            mapping={
                "stage": stage,
                "fraction": str(item["fraction"]),
                "message": message,
                "updated": str(_now()),
            },
        )

    def events(self, job: str, start: int = 0) -> list[dict]:
        return [json.loads(e) for e in self.r.lrange(f"{_P}events:{job}", start, -1)]

    def follow(self, job: str, *, poll_s: float = 0.25, timeout_s: float = 3600.0) -> Iterator[dict]:
        """Events as they come, until the job ends (or ``timeout_s``)."""
        seen, deadline = 0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            new = self.events(job, seen)
            seen += len(new)
            yield from new
            record = self.get(job)
            if record is None or record["state"] in FINAL and not self.events(job, seen):
                return
            time.sleep(poll_s)

    # --- workers -------------------------------------------------------------------------------------------
    def heartbeat(self, worker: str, **info) -> None:
        self.r.hset(f"{_P}workers", worker, json.dumps({**info, "seen": _now()}))

    def workers(self, fresh_s: float = 60.0) -> dict[str, dict]:
        out = {}
        for name, raw in self.r.hgetall(f"{_P}workers").items():
            info = json.loads(raw)
            info["alive"] = _now() - float(info.get("seen", 0)) < fresh_s
            out[name] = info
        return out

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except Exception:
            return False
