"""The node's DICOM side: a listener the PACS (or a modality) sends studies to, and fetching a study by UID.

The listener answers C-ECHO and C-STORE (pynetdicom) for the callers on the allow-list only (AE title *and*
address; an association from anyone else is rejected before any data is sent).  Instances are filed by study;
a study is drafted once it is stable (no new instance for ``stable_after_s``), as a job of the owner
``dicom:AET``.  Files are named by the node (SOP Instance UIDs that are not UIDs are refused), never by the
sender.

Only images are drafted from, so only images are kept: an instance without pixel data (an SR, a PDF, a key
object, a presentation state) or a segmentation is acknowledged and dropped.  A PACS that routes a study again
once something was added to it (Orthanc's ``OnStableStudy``, an auto-routing rule), as it does when the node's
own draft arrives there, sends the same images again: a study whose images were drafted already (same digest,
its job not failed or cancelled) is not drafted, nor sent to the PACS, again, so routing never loops.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from pathlib import Path

from ..io.errors import InputError
from .config import NodeConfig
from .security import Audit
from .store import JobStore

log = logging.getLogger(__name__)

__all__ = ["Listener", "fetch_study", "study_digest"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
ACTIVE_OR_DONE = ("queued", "running", "done")


def is_image(ds) -> bool:
    """Whether an instance is an image the node may draft from (pixel data, and not a segmentation)."""
    pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    return pixels and str(ds.get("SOPClassUID", "")) != SEGMENTATION


def study_digest(folder: Path) -> str:
    """SHA-256 over a study's files in name order: the same study received twice has the same digest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fetch_study(cfg: NodeConfig, study_uid: str) -> tuple[Path, str]:
    """The study ``study_uid`` fetched from the configured PACS into the node's incoming folder."""
    from ..dicom.network import fetch_dicomweb, fetch_dimse, parse_peer

    folder = cfg.folder("incoming") / f"fetched-{study_uid}"
    source = str(cfg.pacs_source)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    if source.startswith(("http://", "https://")):
        fetch_dicomweb(source, study_uid, folder)
    else:
        fetch_dimse(parse_peer(source), study_uid, folder, aet=cfg.node_ae_title)
    return folder, study_digest(folder)


class Listener:
    """C-ECHO/C-STORE SCP with an allow-list, and the thread that turns stable studies into jobs."""

    def __init__(self, cfg: NodeConfig, store: JobStore, submit):
        self.cfg, self.store, self.submit = cfg, store, submit
        self.audit = Audit(cfg.data_dir)
        self.incoming = cfg.folder("incoming")
        self._last: dict[str, tuple[float, str]] = {}  # study -> (last arrival, calling AE)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._watcher: threading.Thread | None = None

    def _allowed(self, ae_title: str, address: str) -> bool:
        return any(c.ae_title == ae_title and c.host == address for c in self.cfg.dicom_allow)

    def _on_requested(self, event):
        requestor = event.assoc.requestor
        # On the acceptor side pynetdicom sets requestor.ae_title only after this event: read the request's
        primitive = getattr(requestor, "primitive", None)
        ae_title = str(getattr(primitive, "calling_ae_title", None) or requestor.ae_title or "").strip()
        if not self._allowed(ae_title, requestor.address):
            self.audit.write(
                f"dicom:{ae_title}@{requestor.address}", "associate", "refused: not on the allow-list"
            )
            # rejected-permanent, user, calling AE not recognised; then wait (kill) until the A-ASSOCIATE-RJ
            # is sent: the association's thread closes the socket as soon as this returns, and the caller
            # would see an abort instead of the rejection
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()

    def _on_store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        if not _UID.match(study) or not _UID.match(sop) or len(study) > 64 or len(sop) > 64:
            return 0xA900  # dataset does not match SOP class: no usable identifiers
        if not is_image(ds):
            return 0x0000  # stored as far as the sender is concerned: nothing to draft from (see above)
        folder = self.incoming / study
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{sop}.part"
        ds.save_as(tmp, enforce_file_format=True)
        tmp.replace(folder / f"{sop}.dcm")
        caller = str(event.assoc.requestor.ae_title).strip()
        with self._lock:
            self._last[study] = (time.monotonic(), caller)
        return 0x0000

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.cfg.dicom_ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.require_calling_aet = [c.ae_title for c in self.cfg.dicom_allow]
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server(
            (self.cfg.dicom_host, int(self.cfg.dicom_port)), block=False, evt_handlers=handlers
        )
        self._watcher = threading.Thread(target=self._watch, name="stable-studies", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.cfg.stable_after_s / 4)):
            now = time.monotonic()
            with self._lock:
                ready = [(s, ae) for s, (t, ae) in self._last.items() if now - t >= self.cfg.stable_after_s]
                for study, _ in ready:
                    del self._last[study]
            for study, caller in ready:
                try:
                    self.queue_study(study, caller)
                except Exception as exc:  # one bad study must not stop the listener
                    log.error("study could not be queued: %s", type(exc).__name__)
                    self.audit.write(f"dicom:{caller}", "queue", f"failed: {type(exc).__name__}", study=study)

    def _drafted(self, study: str, digest: str) -> str | None:
        """The job that drafts or drafted these very images of ``study`` (not failed, not cancelled)."""
        for job in self.store.all_jobs():
            if job["study"] == study and job["input_sha256"] == digest and job["state"] in ACTIVE_OR_DONE:
                return job["id"]
        return None

    def queue_study(self, study: str, caller: str) -> str:
        folder = self.incoming / study
        digest = study_digest(folder)
        earlier = self._drafted(study, digest)
        if earlier is not None:  # the same images again (the PACS routed the study when the draft arrived)
            self.audit.write(f"dicom:{caller}", "receive", "drafted already", job=earlier, study=study)
            return earlier
        options = {"explain": self.cfg.explain}
        job = self.store.create(
            f"dicom:{caller}",
            source="dicom",
            inputs=[str(folder)],
            options=options,
            study=study,
            input_sha256=digest,
        )
        self.submit(job)
        self.audit.write(f"dicom:{caller}", "receive", "queued", job=job, study=study)
        return job


def check_uid(uid: str) -> str:
    if not _UID.match(uid) or len(uid) > 64:
        raise InputError(f"not a DICOM UID: {uid!r}")
    return uid
