"""The department's flow with real processes on loopback: a study arrives in the PACS (Orthanc), the PACS
routes it to the AI node with its own C-STORE (Orthanc's REST ``/modalities/NODE/store``, the node declared
in its ``DicomModalities``), the node drafts it once the study is stable, and the draft comes back into the
same study in the PACS, found with a C-FIND: an SR that is PARTIAL / UNVERIFIED / PRELIMINARY, the SEG of the
evidence and the Encapsulated PDF titled DRAFT; routed again with its draft in it (as a routing rule does),
the study is not drafted twice. And a reading station asks the node for a study by its UID: the node fetches
it from the PACS (C-GET), drafts it and sends the draft back the same way."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass

import pytest
from helpers import run_cli, sample_as_dicom
from node_fixtures import FINAL, Node, free_port, running_redis, wait_job, write_toml
from pacs import Orthanc, running_orthanc

pytestmark = pytest.mark.slow

STUDY = "1.2.3.4.5.6"
NODE_AET = "BG3DNODE"
#: Bound on one draft of the sample study on a busy CPU (model warm; with its explanation).
DRAFT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Department:
    pacs: Orthanc
    node: Node

    @property
    def routed_by(self) -> str:
        return f"dicom:{self.pacs.aet}"  # the owner of the jobs of studies the PACS sends


@pytest.fixture(scope="module")
def department(tmp_path_factory):
    """Orthanc holding the sample study (sent there as a modality would) and knowing the node as a
    modality; a node (its own Redis, one worker, explanation on) whose listener allows that Orthanc only and
    whose drafts go back to it."""
    root = tmp_path_factory.mktemp("department")
    listener_port = free_port()
    modalities = {NODE_AET: (NODE_AET, "127.0.0.1", listener_port)}
    with running_orthanc(root, modalities) as pacs, running_redis(root / "redis") as redis:
        series = sample_as_dicom(root / "modality")
        sent = run_cli("send", str(series), "--to", pacs.peer)
        assert sent.returncode == 0, sent.stderr
        node = Node(
            root / "node",
            redis,
            node={"explain": True},
            dicom={
                "ae_title": NODE_AET,
                "port": listener_port,
                "allow": [{"ae_title": pacs.aet, "host": "127.0.0.1"}],
                "stable_after_s": 2.0,
            },
        )
        node.settings["pacs"] = {"destination": pacs.peer, "source": pacs.peer, "ae_title": NODE_AET}
        write_toml(node.config, node.settings)
        node.start()
        try:
            yield Department(pacs, node)
        finally:
            node.stop()


def _orthanc(pacs: Orthanc, method: str, path: str, body: bytes | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read() or b"null")


def _series(pacs: Orthanc) -> dict[str, str]:
    """The study's series in the PACS (C-FIND): Series Instance UID -> Modality."""
    from BrainGemma3DLib.dicom.network import find_dimse, parse_peer

    query = {"StudyInstanceUID": STUDY, "SeriesInstanceUID": "", "Modality": ""}
    return {
        str(s.SeriesInstanceUID): str(s.Modality)
        for s in find_dimse(parse_peer(pacs.peer), query, level="SERIES")
    }


def _instance(pacs: Orthanc, series_uid: str):
    """The one instance of a series (C-FIND at IMAGE level), with the attributes that say what it is."""
    from BrainGemma3DLib.dicom.network import find_dimse, parse_peer

    query = {
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
        "SOPClassUID": "",
    }
    query |= {"CompletionFlag": "", "VerificationFlag": "", "PreliminaryFlag": "", "DocumentTitle": ""}
    found = find_dimse(parse_peer(pacs.peer), query, level="IMAGE")
    assert len(found) == 1, f"series {series_uid}: {len(found)} instances"
    return found[0]


def _check_draft(pacs: Orthanc, new: dict[str, str], *, seg: bool) -> None:
    """The draft's series (``new``: UID -> modality) are an unverified SR, a PDF titled DRAFT and (``seg``) a
    SEG, one each, in the source study (the C-FIND asked for that study only)."""
    assert sorted(new.values()) == sorted(["SR", "DOC", *(["SEG"] if seg else [])]), new
    for uid, modality in new.items():
        found = _instance(pacs, uid)
        if modality == "SR":
            assert str(found.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
            assert (found.CompletionFlag, found.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
            assert found.PreliminaryFlag == "PRELIMINARY"
        elif modality == "DOC":
            assert str(found.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
            assert "DRAFT" in str(found.DocumentTitle), found.DocumentTitle
        else:
            assert str(found.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation


def _sop_uids(pacs: Orthanc, series_uid: str) -> list[str]:
    from BrainGemma3DLib.dicom.network import find_dimse, parse_peer

    query = {"StudyInstanceUID": STUDY, "SeriesInstanceUID": series_uid, "SOPInstanceUID": ""}
    return [str(ds.SOPInstanceUID) for ds in find_dimse(parse_peer(pacs.peer), query, level="IMAGE")]


def _audited(node: Node, outcome: str) -> list[tuple[str, str, str]]:
    """(who, study, job) of the audit log's ``receive`` entries with ``outcome``."""
    entries = [json.loads(line) for line in (node.data_dir / "audit.log").read_text().splitlines()]
    chosen = [a for a in entries if (a["action"], a["outcome"]) == ("receive", outcome)]
    return [(a["who"], a["study"], a["job"]) for a in chosen]


def _routed_jobs(department: Department, *, timeout: float) -> list[dict]:
    """The jobs of studies the PACS sent, once there is one and all are finished (bounded)."""
    deadline, jobs = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        jobs = [j for j in department.node.store.all_jobs() if j["owner"] == department.routed_by]
        if jobs and all(j["state"] in FINAL for j in jobs):
            return jobs
        time.sleep(1.0)
    states = [(j["state"], j["stage"], j["message"]) for j in jobs]
    raise AssertionError(f"routed jobs {states} after {timeout} s\n{department.node.log_tail()}")


def test_the_listener_takes_associations_from_the_pacs_only(department):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    for caller, accepted in ((department.pacs.aet, True), ("INTRUDER", False)):
        ae = AE(ae_title=caller)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", department.node.settings["dicom"]["port"], ae_title=NODE_AET)
        try:
            assert assoc.is_established is accepted, caller
            if accepted:
                assert assoc.send_c_echo().Status == 0x0000
            else:
                assert assoc.is_rejected
        finally:
            if assoc.is_established:
                assoc.release()
    audit = [json.loads(line) for line in (department.node.data_dir / "audit.log").read_text().splitlines()]
    refused = [a for a in audit if a["who"] == "dicom:INTRUDER@127.0.0.1" and a["action"] == "associate"]
    assert refused and all(a["outcome"].startswith("refused") for a in refused), audit


def test_the_pacs_routes_a_study_to_the_node_and_its_draft_comes_back_unverified(department):
    pacs, node = department.pacs, department.node
    before = _series(pacs)
    study_id = next(
        r["ID"] for r in _orthanc(pacs, "POST", "/tools/lookup", STUDY.encode()) if r["Type"] == "Study"
    )
    routed = _orthanc(pacs, "POST", f"/modalities/{NODE_AET}/store", study_id.encode())
    assert (routed["InstancesCount"], routed["FailedInstancesCount"]) == (156, 0), routed

    jobs = _routed_jobs(department, timeout=DRAFT_TIMEOUT_S)
    assert len(jobs) == 1, jobs  # 156 instances, one stable study, one job
    job = jobs[0]
    assert job["state"] == "done", (job, node.log_tail())
    assert job["study"] == STUDY and job["sent_to_pacs"] and job["sent"] == "3", job
    after = _series(pacs)
    _check_draft(pacs, {uid: m for uid, m in after.items() if uid not in before}, seg=True)

    assert _audited(node, "queued") == [(department.routed_by, STUDY, job["id"])]

    # The PACS routes the study again now that the draft is in it (as Orthanc's OnStableStudy rule would): the
    # same images are not drafted again, and nothing more is sent back (routing never loops).
    again = _orthanc(pacs, "POST", f"/modalities/{NODE_AET}/store", study_id.encode())
    held = sum(len(_sop_uids(pacs, uid)) for uid in after)  # the images and every draft's objects
    assert (again["InstancesCount"], again["FailedInstancesCount"]) == (held, 0), again
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _audited(node, "drafted already"):
        time.sleep(0.5)
    assert _audited(node, "drafted already") == [(department.routed_by, STUDY, job["id"])]
    assert [j["id"] for j in node.store.all_jobs() if j["owner"] == department.routed_by] == [job["id"]]
    assert _series(pacs) == after
    kept = sorted(p.name for p in (node.data_dir / "incoming" / STUDY).iterdir())
    assert kept == sorted(f"{uid}.dcm" for uid in _sop_uids(pacs, "1.2.3.4.5.6.1"))  # images only


def test_a_study_uid_given_to_the_node_is_fetched_from_the_pacs_drafted_and_sent_back(department):
    pacs, node = department.pacs, department.node
    before = _series(pacs)
    with node.client(node.token("radiologist"), timeout=300) as client:
        asked = client.post(f"/v1/studies/{STUDY}", params={"explain": "false"})
        assert asked.status_code == 202, asked.text
        view = wait_job(client, asked.json()["id"], timeout=DRAFT_TIMEOUT_S)
        assert view["state"] == "done", (view, node.log_tail())
        assert view["study"] == STUDY and {"report.json", "report.txt", "report.pdf"} <= set(view["files"])
        report = client.get(f"/v1/jobs/{view['id']}/files/report.json").json()
    assert report["input"]["identity"]["study_uid"] == STUDY
    assert report["input"]["series_choice"].startswith("series 1.2.3.4.5.6.1")  # the MR, not an earlier draft
    after = _series(pacs)
    _check_draft(pacs, {uid: m for uid, m in after.items() if uid not in before}, seg=False)
