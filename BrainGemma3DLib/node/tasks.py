"""The job queue: Celery on the department's Redis, one model-holding worker per GPU.

Why Celery: it is the task engine such services are built on, and its late acknowledgement does what a
department needs: a job is taken off the queue only when its worker has finished it, so a worker killed in the
middle (a crash, a reboot, a lost machine) gives the job back to the queue after ``redelivery_after_s`` and
another worker (or the same one restarted) drafts it.  A job that was finished before its worker died is
recognised (:meth:`.store.JobStore.claim`) and never drafted twice; two jobs on the same input, checkpoint and
options share one result (their stamp).

A worker loads the model once, at its first job, and keeps it; start one per GPU with
``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import traceback
from pathlib import Path

from .config import NodeConfig
from .store import JobStore

log = logging.getLogger(__name__)

__all__ = ["QUEUE", "TASK", "make_app", "run_job", "submit"]

TASK = "braingemma3d.draft"
QUEUE = "braingemma3d"
#: Files of a result a client may download (the set ``report`` writes).
RESULT_FILES = ("report.json", "report.txt", "report.pdf", "attribution.nii.gz", "attribution.seg.nrrd")

_MODEL: dict = {}


def make_app(cfg: NodeConfig):
    """The Celery application of this node (broker = the config's Redis; late acknowledgement)."""
    from celery import Celery

    app = Celery("braingemma3d", broker=cfg.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # off the queue only when done ...
        task_reject_on_worker_lost=True,  # ... and back on it when the worker process dies
        worker_prefetch_multiplier=1,  # a worker holds one job at a time: the others stay for other workers
        broker_transport_options={"visibility_timeout": cfg.redelivery_after_s},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=TASK, bind=True, acks_late=True)
    def draft(self, job: str) -> str:
        return run_job(cfg, JobStore(cfg.broker), job)

    return app


def submit(cfg: NodeConfig, job: str, app=None) -> None:
    (app or make_app(cfg)).send_task(TASK, args=[job], queue=QUEUE)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _model(cfg: NodeConfig):
    key = (cfg.model, cfg.device)
    if key not in _MODEL:
        from ..model import load

        _MODEL.clear()
        _MODEL[key] = load(cfg.model, device=cfg.device)
    return _MODEL[key]


def _stamp(record: dict, checkpoint: str) -> str:
    """What makes two drafts the same: the input's bytes, the weights and the options."""
    text = json.dumps([record["input_sha256"], checkpoint, record["options"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _heartbeat(store: JobStore, cfg: NodeConfig, stop: threading.Event) -> None:
    device = cfg.device
    while not stop.wait(5.0):
        store.heartbeat(worker_name(), device=device, model=cfg.model, busy=True)


def run_job(cfg: NodeConfig, store: JobStore, job: str) -> str:
    """Draft one job (called by the Celery task; also callable directly). Returns its final state."""
    from ..app.pipeline import ReportRequest, run_report
    from ..explain import Cancelled
    from ..io.errors import InputError

    record = store.claim(job, worker_name())
    if record is None:
        return "skipped"  # finished or cancelled already: a redelivery after its worker died
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, cfg, stop), daemon=True)
    beat.start()
    try:
        store.event(job, "model", 0.02, f"loading the model on {worker_name()}")
        model = _model(cfg)
        store.heartbeat(
            worker_name(), device=str(getattr(model, "device", cfg.device)), model=cfg.model, busy=True
        )
        stamp = _stamp(record, model.checkpoint_sha256)
        out = cfg.folder("results") / job
        same = store.done_with_stamp(stamp)
        earlier = store.get(same) if same else None
        if earlier and earlier["state"] == "done" and Path(earlier["results"]).is_dir() and same != job:
            shutil.copytree(earlier["results"], out, dirs_exist_ok=True)  # the same study drafted before
            store.event(job, "done", 1.0, f"the same input was drafted by job {same}: its results")
        else:
            options = record["options"]
            request = ReportRequest(
                inputs=record["inputs"],
                out=out,
                model=cfg.model,
                device=cfg.device,
                explain=bool(options.get("explain", cfg.explain)),
                overwrite=True,
                series=options.get("series") or None,
            )
            run_report(
                request,
                model=model,
                progress=lambda stage, fraction, message: store.event(job, stage, fraction, message),
                cancel=lambda: store.cancel_requested(job),
            )
            store.remember_stamp(stamp, job)
        store.update(job, results=str(out))
        if cfg.pacs_destination and record["source"] in ("dicom", "study"):
            store.event(job, "pacs", 0.99, "sending the draft SR, SEG and PDF to the PACS")
            sent = send_to_pacs(cfg, out)
            store.update(job, sent_to_pacs=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), sent=len(sent))
        store.update(job, state="done", stage="done", fraction=1.0, message="draft ready")
        store.event(job, "done", 1.0, "draft ready")
        return "done"
    except Cancelled:
        store.update(job, state="cancelled", stage="cancelled", message="cancelled")
        store.event(job, "cancelled", 1.0, "cancelled")
        return "cancelled"
    except InputError as exc:
        store.update(job, state="failed", stage="failed", error=str(exc.problem), message=str(exc.problem))
        store.event(job, "failed", 1.0, str(exc.problem))
        return "failed"
    except Exception as exc:  # an internal error: the job fails, the worker goes on
        log.error("job %s failed: %s", job, traceback.format_exc())
        message = f"internal error: {type(exc).__name__}"
        store.update(job, state="failed", stage="failed", error=message, message=message)
        store.event(job, "failed", 1.0, message)
        return "failed"
    finally:
        stop.set()
        store.heartbeat(worker_name(), device=cfg.device, model=cfg.model, busy=False)


def send_to_pacs(cfg: NodeConfig, report_dir: Path) -> list[str]:
    """The draft as DICOM (SR PARTIAL/UNVERIFIED, SEG, Encapsulated PDF titled DRAFT) into the source study,
    sent to the configured destination; returns the SOP Instance UIDs stored."""
    import tempfile

    from ..dicom.export import export_report
    from ..dicom.network import dicom_files, parse_peer, send_dicomweb, send_dimse

    with tempfile.TemporaryDirectory(prefix="bg3d-objects-", dir=cfg.folder("tmp")) as tmp:
        objects = Path(tmp) / "objects"
        export_report(report_dir, objects)
        files = dicom_files(objects)
        destination = str(cfg.pacs_destination)
        if destination.startswith(("http://", "https://")):
            return send_dicomweb(files, destination)
        return send_dimse(files, parse_peer(destination), aet=cfg.node_ae_title)
