"""The node holds patient data only as long as it needs to.

A finished job's received instances, upload and results are deleted once its results are where they belong
(stored in the PACS, or fetched by the client) and a short grace has passed, and in any case after
``retention_hours``; ``braingemma3d serve purge --study UID`` removes everything of a study at once.  The job
record is forgotten with its files; the audit log keeps the identifiers, never pixels or text.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .config import NodeConfig
from .security import Audit
from .store import FINAL, JobStore

__all__ = ["GRACE_S", "purge_expired", "purge_study"]

#: After the results reached the PACS or the client, they stay this long (a client fetching several files).
GRACE_S = 15 * 60


def _delete_job(cfg: NodeConfig, store: JobStore, job: dict) -> None:
    for key in ("results", "upload"):
        if job.get(key):
            shutil.rmtree(job[key], ignore_errors=True)
    for path in job.get("inputs") or []:  # a received study lives in the node's incoming folder only
        folder = Path(path)
        if cfg.folder("incoming") in folder.parents:
            shutil.rmtree(folder, ignore_errors=True)
    store.forget(job["id"])


def purge_expired(cfg: NodeConfig, store: JobStore, *, now: float | None = None) -> list[str]:
    """Delete what finished jobs no longer need; returns the job ids purged."""
    now = time.time() if now is None else now
    audit, purged = Audit(cfg.data_dir), []
    for job in store.all_jobs():
        if job["state"] not in FINAL:
            continue
        delivered = bool(job.get("sent_to_pacs") or job.get("fetched"))
        old = now - job["created"] > cfg.retention_hours * 3600
        if old or delivered and now - job["updated"] > GRACE_S:
            _delete_job(cfg, store, job)
            audit.write(
                "node", "purge", "expired" if old else "delivered", job=job["id"], study=job.get("study")
            )
            purged.append(job["id"])
    return purged


def purge_study(cfg: NodeConfig, store: JobStore, study: str, who: str = "admin") -> int:
    """Everything the node holds of ``study`` (its jobs, received instances, results); returns the number of
    jobs removed."""
    from .listener import check_uid

    check_uid(study)  # a UID, never a path: the study's folder is removed
    jobs = [j for j in store.all_jobs() if j.get("study") == study]
    for job in jobs:
        if job["state"] not in FINAL:
            store.cancel(job["id"])  # its worker stops at its next stage and writes nothing more
        _delete_job(cfg, store, job)
    folder = cfg.folder("incoming") / study
    shutil.rmtree(folder, ignore_errors=True)
    Audit(cfg.data_dir).write(who, "purge", f"study removed ({len(jobs)} job(s))", study=study)
    return len(jobs)
