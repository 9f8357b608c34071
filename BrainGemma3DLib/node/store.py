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

__all__ = ["LEASE_S", "STATES", "JobStore"]

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
_P = "bg3d:"
#: Seconds a worker's hold on a running job lasts unless renewed (the worker renews it every few seconds): a
#: redelivered job whose worker died is taken over this long after its last renewal at the latest.
LEASE_S = 20.0
_IF_HELD = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call("
_RENEW = _IF_HELD + "'expire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = _IF_HELD + "'del', KEYS[1]) end return 0"
# A job's fields (and an event) set in one step, only while the job exists (not after a purge)
_WRITE = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then redis.call('rpush', KEYS[2], ARGV[1]) end
redis.call('hset', KEYS[1], unpack(ARGV, 2))
return 1
"""


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

    def update(self, job: str, **fields) -> bool:
        """Set fields of ``job``'s record; nothing (False) if the job was purged meanwhile: a worker still
        drafting a purged job recreates no record."""
        fields["updated"] = _now()
        return self._write(job, None, fields)

    def _write(self, job: str, event: dict | None, fields: dict) -> bool:
        args = [json.dumps(event) if event is not None else ""]
        for key, value in fields.items():
            args += [key, str(value)]
        return bool(self.r.eval(_WRITE, 2, f"{_P}job:{job}", f"{_P}events:{job}", *args))

    def claim(
        self, job: str, worker: str, *, name: str = "", gone=None, poll_s: float = 1.0, on_wait=None
    ) -> dict | None:
        """Take ``job`` for ``worker``: mark it running and hold its lease (:data:`LEASE_S`, renewed by
        :meth:`renew` while the worker drafts).  None when the job is finished or cancelled: a redelivery of a
        job done before its worker died is not done again.

        While another worker holds the lease (it is drafting the job: Celery redelivers a message still being
        worked on once it is older than ``redelivery_after_s``), wait: None once that worker finishes, the job
        once its lease lapses (the worker died) or ``gone(holder)`` says the holder is a dead process of this
        machine.  So a job is never drafted by two workers at once.  The record returned has ``restarted``
        set when an earlier worker had started it; ``name`` is the worker as the job shows it (default
        ``worker``, the lease's holder)."""
        key, lease = f"{_P}job:{job}", f"{_P}lease:{job}"
        waited = False
        while True:
            state = self.r.hget(key, "state")
            if state is None or state in FINAL:
                return None
            if self.r.set(lease, worker, nx=True, ex=int(LEASE_S)):
                break
            holder = self.r.get(lease)
            if holder and gone is not None and gone(holder):
                self.release(job, holder)
                continue
            if not waited and on_wait is not None:
                on_wait(holder)
            waited = True
            time.sleep(poll_s)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if state is None or state in FINAL:
                        pipe.unwatch()
                        self.release(job, worker)
                        return None
                    pipe.multi()
                    running = {"state": "running", "worker": name or worker, "updated": str(_now())}
                    pipe.hset(key, mapping=running)
                    pipe.execute()
                    break
                except Exception as exc:  # a concurrent change: read again
                    if type(exc).__name__ != "WatchError":
                        raise
        record = self.get(job)
        if record is not None:
            record["restarted"] = state == "running"
        return record

    def renew(self, job: str, worker: str) -> bool:
        """Extend ``worker``'s lease on ``job``; False if it no longer holds it."""
        return bool(self.r.eval(_RENEW, 1, f"{_P}lease:{job}", worker, int(LEASE_S)))

    def release(self, job: str, worker: str) -> None:
        """Give up ``worker``'s lease on ``job`` (nothing if another holds it)."""
        self.r.eval(_RELEASE, 1, f"{_P}lease:{job}", worker)

    def jobs_of(self, owner: str) -> list[dict]:
        return [j for j in (self.get(i) for i in self.r.zrange(f"{_P}user:{owner}", 0, -1)) if j]

    def all_jobs(self) -> list[dict]:
        return [j for j in (self.get(i) for i in self.r.zrange(f"{_P}jobs", 0, -1)) if j]

    def active_count(self, owner: str) -> int:
        return sum(j["state"] in ("queued", "running") for j in self.jobs_of(owner))

    def forget(self, job: str) -> None:
        record = self.get(job)
        pipe = self.r.pipeline()
        pipe.delete(f"{_P}job:{job}", f"{_P}events:{job}", f"{_P}lease:{job}")  # a cancel request stays
        pipe.zrem(f"{_P}jobs", job)
        if record:
            pipe.zrem(f"{_P}user:{record['owner']}", job)
        pipe.execute()

    # --- cancel --------------------------------------------------------------------------------------
    def cancel(self, job: str) -> bool:
        """Ask for ``job`` to stop: a queued job is cancelled at once (its worker will skip it), a running one
        at its worker's next stage. False if it had finished already."""
        record = self.get(job)
        if record is None or record["state"] in FINAL:
            return False
        self.r.set(f"{_P}cancel:{job}", "1", ex=7 * 24 * 3600)
        key = f"{_P}job:{job}"
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hget(key, "state") != "queued":  # running: the worker stops at its next stage
                        pipe.unwatch()
                        return True
                    item = {"time": _now(), "stage": "cancelled", "fraction": record["fraction"]}
                    item["message"] = "cancelled before it started"
                    pipe.multi()
                    pipe.rpush(f"{_P}events:{job}", json.dumps(item))
                    pipe.hset(
                        key,
                        mapping={
                            "state": "cancelled",
                            "stage": "cancelled",
                            "message": item["message"],
                            "updated": str(_now()),
                        },
                    )
                    pipe.execute()
                    return True
                except Exception as exc:  # a concurrent change (a worker claimed it): read again
                    if type(exc).__name__ != "WatchError":
                        raise

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
    def event(self, job: str, stage: str, fraction: float, message: str, *, fields=None, **extra) -> None:
        """Append a progress event and show it as the job's stage; ``fields`` (the job's state...) are set in
        the same step, so that a job is never final without its final event, nor the reverse. Nothing for a
        purged job."""
        item = {
            "time": _now(),
            "stage": stage,
            "fraction": round(float(fraction), 4),
            "message": message,
            **extra,
        }
        shown = {"stage": stage, "fraction": item["fraction"], "message": message, "updated": _now()}
        self._write(job, item, shown | (fields or {}))

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
