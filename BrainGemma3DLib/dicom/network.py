"""To and from a PACS: DIMSE (C-STORE, C-FIND, C-GET with pynetdicom) and DICOMweb (STOW, QIDO, WADO with
dicomweb-client).

Why both: many reading rooms still speak only DIMSE; newer archives and cloud PACS speak DICOMweb. Every
failure a user can meet (the PACS refuses the association, does not answer, rejects an object, the study is
not there) is one clear line (:class:`InputError`, exit code 2) naming the PACS and the problem. ``fetch``
writes into a staging folder and moves it into place only when every instance arrived: nothing partial is
left.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io.atomic import check_output_dir, replace_dir
from ..io.errors import InputError

DEFAULT_AET = "BRAINGEMMA3D"
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Peer:
    """A DIMSE peer: ``AET@HOST:PORT``."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """``ORTHANC@127.0.0.1:4242`` -> Peer; a clear error for anything else."""
    found = re.fullmatch(r"([^@\s]{1,16})@([^:\s]+):(\d{1,5})", text.strip())
    if not found or not 0 < int(found.group(3)) < 65536:
        raise InputError(f"not a DICOM peer {text!r}: write AET@HOST:PORT (e.g. ORTHANC@pacs.example:4242)")
    return Peer(found.group(1), found.group(2), int(found.group(3)))


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files under ``folder`` (Part 10 files: "DICM" at byte 128), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of DICOM objects", folder)
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            found.append(path)
    if not found:
        raise InputError("no DICOM files to send", folder)
    return found


def _ae(aet: str, timeout: float):
    """An application entity with our timeouts; pynetdicom's own log lines stay quiet unless debugging
    (our error says what happened, in one line)."""
    from pynetdicom import AE

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def _associate(ae, peer: Peer, **kwargs):
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, **kwargs)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected or assoc.is_aborted:  # a PACS may abort instead of rejecting (Orthanc, at times)
        how = "refused the association" + (" (it aborted the negotiation)" if not assoc.is_rejected else "")
        raise InputError(
            f"the PACS {peer} {how} (check its AE title {peer.aet}, and that it accepts ours, {ae.ae_title})"
        )
    raise InputError(f"no answer from the PACS {peer} (not running, wrong port, or a firewall)")


def send_dimse(
    files: list[Path], peer: Peer, *, aet: str = DEFAULT_AET, timeout: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:  # fmt: skip
    """C-STORE every file to ``peer``; returns the SOP Instance UIDs stored. Stops at the first rejection."""
    import pydicom
    from pynetdicom.sop_class import Verification

    datasets = [pydicom.dcmread(path) for path in files]
    ae = _ae(aet, timeout)
    # Verification too: a PACS that accepts none of the objects' kinds still takes the association, and the
    # error can name the object it refuses instead of "association aborted".
    ae.add_requested_context(Verification)
    for sop_class, syntax in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}:
        ae.add_requested_context(sop_class, syntax)
    assoc = _associate(ae, peer)
    stored = []
    try:
        accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
        for path, ds in zip(files, datasets, strict=True):
            if (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) not in accepted:
                raise InputError(
                    f"the PACS {peer} does not accept this kind of object (SOP class {ds.SOPClassUID})", path
                )
        for n, (path, ds) in enumerate(zip(files, datasets, strict=True), start=1):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise InputError(f"the PACS {peer} did not answer the store (timeout)", path)
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                raise InputError(f"the PACS {peer} rejected the object (status 0x{code:04X})", path)
            stored.append(str(ds.SOPInstanceUID))
            if progress:
                progress(n, len(files))
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def find_dimse(
    peer: Peer, query: dict[str, str], *, level: str = "STUDY", aet: str = DEFAULT_AET,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list:  # fmt: skip
    """C-FIND at ``level`` (STUDY, SERIES, IMAGE) with ``query`` (keyword -> value; empty = return it)."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in query.items():
        setattr(identifier, keyword, value)
    ae = _ae(aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, peer)
    matches = []
    try:
        for status, found in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                raise InputError(f"the PACS {peer} did not answer the query (timeout)")
            if code in (0xFF00, 0xFF01) and found is not None:
                matches.append(found)
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise InputError(f"the PACS {peer} failed the query (status 0x{code:04X})")
    finally:
        if assoc.is_established:
            assoc.release()
    return matches


def fetch_dimse(
    peer: Peer, study_uid: str, out: str | os.PathLike, *, aet: str = DEFAULT_AET,
    timeout: float = DEFAULT_TIMEOUT_S, progress: Callable[[int, int], None] | None = None,
) -> list[Path]:  # fmt: skip
    """C-GET a whole study into ``out`` (new or empty; all or nothing); files named by SOP Instance UID.

    An image-level C-FIND first says which instances (and of which SOP classes) the study holds: the
    association then offers exactly those classes for the instances to come back on, and a retrieve that
    brings fewer is an error rather than a silently partial study.
    """
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    check_output_dir(out, ())  # a folder holding other files is refused before anything is retrieved
    query = {"StudyInstanceUID": study_uid, "SOPInstanceUID": "", "SOPClassUID": ""}
    found = find_dimse(peer, query, level="IMAGE", aet=aet, timeout=timeout)
    if not found:
        raise InputError(f"the PACS {peer} has no study {study_uid}")
    expected = len(found)
    classes = sorted({str(ds.SOPClassUID) for ds in found if getattr(ds, "SOPClassUID", "")})
    received: dict[str, bytes] = {}

    def on_store(event):
        uid = str(event.request.AffectedSOPInstanceUID)
        received[uid] = event.encoded_dataset()
        if progress:
            progress(len(received), expected)
        return 0x0000

    ae = _ae(aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    # C-GET brings the instances back on the same association: we are their storage SCP (SCP/SCU roles).
    roles = []
    for sop_class in classes[:127]:
        ae.add_requested_context(sop_class)
        roles.append(build_role(sop_class, scp_role=True))
    identifier = _get_identifier(study_uid)
    assoc = _associate(ae, peer, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    failed = 0
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            code = getattr(status, "Status", None)
            if code is None:
                raise InputError(f"the PACS {peer} stopped answering the retrieve (timeout)")
            if code in (0xA701, 0xA702, 0xA900, 0xAA00, 0xAA01, 0xAA02, 0xAA03, 0xAA04, 0xC000):
                failed = max(failed, int(getattr(status, "NumberOfFailedSuboperations", 1) or 1))
    finally:
        if assoc.is_established:
            assoc.release()
    if failed or not received or (expected and len(received) < expected):
        raise InputError(
            f"the PACS {peer} sent {len(received)} of {expected or '?'} instances of study {study_uid}"
            + (f" ({failed} failed)" if failed else "")
        )
    return _write_received(received, out)


def _get_identifier(study_uid: str):
    from pydicom.dataset import Dataset

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def _write_received(received: dict[str, bytes], out: str | os.PathLike) -> list[Path]:
    """Write the retrieved instances (Part 10 bytes) into ``out`` at once (staging folder, then rename)."""
    names = [f"{uid}.dcm" for uid in sorted(received)]
    with replace_dir(out, names) as tmp:
        for uid in sorted(received):
            (tmp / f"{uid}.dcm").write_bytes(received[uid])
    return [Path(out) / name for name in names]


# --- DICOMweb ---------------------------------------------------------------------------------------


def _web(url: str, timeout: float):
    from dicomweb_client.api import DICOMwebClient

    if not re.match(r"https?://", url):
        raise InputError(f"not a DICOMweb URL {url!r}: write http(s)://host:port/dicom-web")
    client = DICOMwebClient(url=url.rstrip("/"))
    client._session.request = _with_timeout(client._session.request, timeout)
    return client


def _with_timeout(request, timeout: float):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def _web_error(url: str, exc: Exception, what: str) -> InputError:
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return InputError(f"the DICOMweb server {url} refused the {what} (HTTP {exc.response.status_code})")
    if isinstance(exc, requests.exceptions.Timeout):
        return InputError(f"the DICOMweb server {url} did not answer the {what} (timeout)")
    return InputError(f"cannot reach the DICOMweb server {url} ({type(exc).__name__})")


def send_dicomweb(files: list[Path], url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """STOW-RS every file; returns the SOP Instance UIDs the server says it stored."""
    import pydicom
    import requests

    datasets = [pydicom.dcmread(path) for path in files]
    client = _web(url, timeout)
    try:
        response = client.store_instances(datasets)
    except requests.exceptions.RequestException as exc:
        raise _web_error(url, exc, "store") from exc
    failed = getattr(response, "FailedSOPSequence", None) or []
    if failed:
        raise InputError(f"the DICOMweb server {url} rejected {len(failed)} of {len(datasets)} objects")
    return [str(ds.SOPInstanceUID) for ds in datasets]


def find_dicomweb(url: str, query: dict[str, str], *, timeout: float = DEFAULT_TIMEOUT_S) -> list[dict]:
    """QIDO-RS study search."""
    import requests

    try:
        return _web(url, timeout).search_for_studies(search_filters=query)
    except requests.exceptions.RequestException as exc:
        raise _web_error(url, exc, "query") from exc


def fetch_dicomweb(
    url: str, study_uid: str, out: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[Path]:
    """WADO-RS a whole study into ``out`` (new or empty; all or nothing)."""
    import requests

    check_output_dir(out, ())
    if not find_dicomweb(url, {"StudyInstanceUID": study_uid}, timeout=timeout):
        raise InputError(f"the DICOMweb server {url} has no study {study_uid}")
    try:
        datasets = _web(url, timeout).retrieve_study(study_uid)
    except requests.exceptions.RequestException as exc:
        raise _web_error(url, exc, "retrieve") from exc
    received = {}
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        received[str(ds.SOPInstanceUID)] = buffer.getvalue()
    if not received:
        raise InputError(f"the DICOMweb server {url} sent no instance of study {study_uid}")
    return _write_received(received, out)
