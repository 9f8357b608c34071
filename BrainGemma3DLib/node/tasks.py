"""The job queue: Celery on the department's Redis, one model-holding worker per GPU.

Why Celery: it is the task engine such services are built on, and its late acknowledgement does what a
department needs: a job is taken off the queue only when its worker has finished it, so a worker killed in the
middle (a crash, a reboot, a lost machine) gives the job back to the queue after ``redelivery_after_s`` and
another worker (or the same one restarted) drafts it.  A job that was finished before its worker died is
recognised (:meth:`.store.JobStore.claim`) and never drafted twice; two jobs on the same input, checkpoint and
options share one result (their stamp).

A worker loads the model once, when it starts (:func:`start_worker`), and keeps it; start one per GPU with
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

__all__ = ["QUEUE", "TASK", "make_app", "run_job", "start_worker", "submit"]

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
        broker_transport_options={
            "visibility_timeout": cfg.redelivery_after_s,
            # look for such messages every few seconds (kombu's default looks every 100 s: 10 s x 10)
            "unacked_restore_interval": max(1, min(10, round(cfg.redelivery_after_s / 4))),
            "unacked_restore_throttle": 1,
        },
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


def _machine() -> str:
    """This machine's boot and process namespace (Linux): a lease holder with the same one is a process whose
    liveness can be checked here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _lease_holder() -> str:
    return f"{worker_name()}|{_machine()}"


def _holder_gone(holder: str) -> bool:
    """Whether the lease ``holder`` is a process of this machine that is no longer running (killed: its
    job may be taken over at once instead of when its lease lapses)."""
    name, _, machine = holder.partition("|")
    pid = name.rpartition(":")[2]
    if not machine or machine != _machine() or not pid.isdigit():
        return False  # another machine: only its lease lapsing tells
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie: killed, not yet reaped


def _model(cfg: NodeConfig, loading=None):
    key = (cfg.model, cfg.device)
    if key not in _MODEL:
        from ..model import load

        if loading is not None:
            loading()
        _MODEL.clear()
        _MODEL[key] = load(cfg.model, device=cfg.device)
    return _MODEL[key]


def _stamp(record: dict, checkpoint: str) -> str:
    """What makes two drafts the same: the input's bytes, the weights and the options."""
    text = json.dumps([record["input_sha256"], checkpoint, record["options"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


#: Seconds between a worker's heartbeats (and a busy one's renewals of its job's lease).
BEAT_S = 3.0
_BUSY = threading.Event()


def start_worker(cfg: NodeConfig) -> None:
    """What a worker process does before it takes jobs: load the model (so that its first job does not wait
    for it, and its device is known) and say it is alive every few seconds, busy or idle, in the status."""
    store = JobStore(cfg.broker)
    model = _model(cfg)
    device = str(getattr(model, "device", cfg.device))

    def beat() -> None:
        while True:
            try:
                store.heartbeat(worker_name(), device=device, model=cfg.model, busy=_BUSY.is_set())
            except Exception as exc:  # the broker away for a moment: the next beat tries again
                log.warning("heartbeat: %s", type(exc).__name__)
            time.sleep(BEAT_S)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def _heartbeat(
    store: JobStore, cfg: NodeConfig, job: str, stop: threading.Event, lost: threading.Event
) -> None:
    while not stop.wait(BEAT_S):
        try:
            if not store.renew(job, _lease_holder()):
                lost.set()  # taken over (this worker was silent past its lease): the other one finishes it
            store.heartbeat(worker_name(), device=cfg.device, model=cfg.model, busy=True)
        except Exception as exc:  # the broker away for a moment: the next beat tries again
            log.warning("heartbeat: %s", type(exc).__name__)


def run_job(cfg: NodeConfig, store: JobStore, job: str) -> str:
    """Draft one job (called by the Celery task; also callable directly). Returns its final state."""
    from ..app.pipeline import ReportRequest, run_report
    from ..explain import Cancelled, ExplainOptions
    from ..io.errors import InputError

    holder = _lease_holder()
    record = store.claim(
        job,
        holder,
        name=worker_name(),
        gone=_holder_gone,
        on_wait=lambda other: log.warning(
            "job %s is still being drafted by %s: waiting for it (is [node] redelivery_after_s shorter than "
            "a draft?)",
            job,
            other.partition("|")[0],
        ),
    )
    if record is None:
        return "skipped"  # finished or cancelled already: a redelivery after its worker died
    _BUSY.set()
    stop, lost = threading.Event(), threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, cfg, job, stop, lost), daemon=True)
    beat.start()
    try:
        if record.get("restarted"):
            store.event(job, "queued", 0.0, f"its worker stopped; drafting it again on {worker_name()}")
        model = _model(
            cfg, loading=lambda: store.event(job, "model", 0.0, f"loading the model on {worker_name()}")
        )
        store.heartbeat(
            worker_name(), device=str(getattr(model, "device", cfg.device)), model=cfg.model, busy=True
        )
        stamp = _stamp(record, model.checkpoint_sha256)
        out = cfg.folder("results") / job
        same = store.done_with_stamp(stamp)
        earlier = store.get(same) if same else None
        if earlier and earlier["state"] == "done" and Path(earlier["results"]).is_dir() and same != job:
            shutil.copytree(earlier["results"], out, dirs_exist_ok=True)  # the same study drafted before
            store.event(job, "write", 0.98, f"the same input was drafted by job {same}: its results")
        else:
            options = record["options"]
            request = ReportRequest(
                inputs=record["inputs"],
                out=out,
                model=cfg.model,
                device=cfg.device,
                explain=bool(options.get("explain", cfg.explain)),
                explain_options=ExplainOptions(**(options.get("explain_options") or {})),
                fields=dict(options.get("fields") or {}),
                overwrite=True,
                series=options.get("series") or None,
            )

            def progress(stage: str, fraction: float, message: str) -> None:
                if stage != "done":  # the job is done once its results are recorded (below), not before
                    store.event(job, stage, fraction, message)

            run_report(
                request,
                model=model,
                progress=progress,
                cancel=lambda: lost.is_set() or store.cancel_requested(job),
            )
            store.remember_stamp(stamp, job)
        if lost.is_set():
            raise Cancelled("taken over by another worker")
        if not store.update(job, results=str(out)):  # purged while it was drafted: keep nothing of it
            shutil.rmtree(out, ignore_errors=True)
            return "purged"
        if cfg.pacs_destination and record["source"] in ("dicom", "study"):
            store.event(job, "pacs", 0.99, "sending the draft SR, SEG and PDF to the PACS")
            sent = send_to_pacs(cfg, out)
            store.update(job, sent_to_pacs=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), sent=len(sent))
        store.event(job, "done", 1.0, "draft ready", fields={"state": "done"})
        return "done"
    except Cancelled:
        if lost.is_set():
            log.warning("job %s was taken over by another worker", job)
            return "taken over"
        store.event(job, "cancelled", 1.0, "cancelled", fields={"state": "cancelled"})
        return "cancelled"
    except InputError as exc:
        problem = str(exc.problem)
        store.event(job, "failed", 1.0, problem, fields={"state": "failed", "error": problem})
        return "failed"
    except Exception as exc:  # an internal error: the job fails, the worker goes on
        log.error("job %s failed: %s", job, traceback.format_exc())
        message = f"internal error: {type(exc).__name__}"
        store.event(job, "failed", 1.0, message, fields={"state": "failed", "error": message})
        return "failed"
    finally:
        _BUSY.clear()
        stop.set()
        beat.join(timeout=BEAT_S + 5)
        store.release(job, holder)
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
