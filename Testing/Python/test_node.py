"""The AI node (``braingemma3d serve``) as departments run it: real processes on loopback (a private Redis,
the node with its HTTP API, DICOM listener and workers), started and stopped by the fixtures.

One node serves the module (its worker drafts the sample case once); the tests that kill processes, change the
configuration or need a node without workers start their own.  Drafts run on the bundled demo model, without
the explanation (slow) but in one job (two workers, one killed)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, SAMPLE
from node_fixtures import FINAL, Node, follow_events, free_port, running_redis, submit, wait_job

#: The stages the Slicer panel shows for a local run, in their order (a node job shows the same).
PANEL_STAGES = ("read", "model", "input_check", "generate", "check", "pdf", "write", "done")
REPORT_SET = ("report.json", "report.txt", "report.pdf")
EXPLAINED = ("attribution.nii.gz", "attribution.seg.nrrd")
#: The shared node's limits (small, so that the refusals are quick to provoke).
MAX_UPLOAD_MB, MAX_UNPACKED_MB, REQUEST_TIMEOUT_S = 2, 50, 4


#: The tests on the module's node: one group, so that under pytest-xdist one worker starts that node once.
shared = pytest.mark.xdist_group("test_node-shared")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The module's node: one worker, explain off, small upload limits, a DICOM listener that allows PACS from
    127.0.0.1 and ELSEWHERE only from 127.0.0.2; users alice and bob."""
    folder = tmp_path_factory.mktemp("node")
    with running_redis(folder / "redis") as redis:
        node = Node(
            folder,
            redis,
            http={
                "max_upload_mb": MAX_UPLOAD_MB,
                "max_unpacked_mb": MAX_UNPACKED_MB,
                "request_timeout_s": REQUEST_TIMEOUT_S,
            },
            dicom={
                "ae_title": "BG3DNODE",
                "host": "127.0.0.1",
                "port": free_port(),
                "stable_after_s": 2,
                "allow": [
                    {"ae_title": "PACS", "host": "127.0.0.1"},
                    {"ae_title": "ELSEWHERE", "host": "127.0.0.2"},
                ],
            },
        )
        node.tokens = {user: node.token(user) for user in ("alice", "bob")}
        node.start()
        try:
            yield node
        finally:
            node.stop()


@pytest.fixture(scope="module")
def sample_job(node, tmp_path_factory):
    """The sample case drafted by the node (alice's job, its events followed as the panel follows them) and,
    at the same time, by a local ``braingemma3d report`` with the same options."""
    local = tmp_path_factory.mktemp("local") / "report"
    command = [sys.executable, "-m", "BrainGemma3DLib", "report", str(SAMPLE), "--out", str(local), "--quiet",
               "--patient-name", "Doe^Jane", "--patient-id", "P-0007"]  # fmt: skip
    with node.client(node.tokens["alice"]) as client:
        job = submit(client, SAMPLE, "nii.gz", explain=False, fields=IDENTITY)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        events, end = follow_events(client, job, timeout=600)
        _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    return {"id": job, "events": events, "end": end, "local": local}


@pytest.fixture(scope="module")
def alice_job(node) -> str:
    """A job of alice's that stays queued (made in the node's store, never sent to a worker): what the tests
    of ownership and load ask about, at no drafting cost."""
    return node.store.create("alice", source="http", inputs=[], options={"explain": False})


#: The identity a station sends with a volume (the PDF header; nothing is invented for a NIfTI input).
IDENTITY = {"patient_name": "Doe^Jane", "patient_id": "P-0007"}


def _comparable(report: dict) -> dict:
    """report.json less what differs between two runs of one draft: when, how long, the input's file name."""
    out = {k: v for k, v in report.items() if k not in ("created", "timings")}
    out["input"] = {k: v for k, v in report["input"].items() if k not in ("paths", "channels")}
    return out


# --- 1. a volume in, its progress, its results --------------------------------------------------------------


@shared
@pytest.mark.slow
def test_submit_follow_and_fetch_the_report_set(node, sample_job):
    events, end = sample_job["events"], sample_job["end"]
    stages = [e["stage"] for e in events]
    assert end["state"] == "done" and end["files"] == list(REPORT_SET), (end, node.log_tail())
    # the panel's stages, in its order, each once, and one "done", the last
    seen = [s for s in stages if s in PANEL_STAGES]
    assert seen == [s for s in PANEL_STAGES if s in seen] and len(seen) == len(set(seen)), stages
    assert {"read", "input_check", "generate", "pdf", "write", "done"} <= set(seen)
    assert stages.count("done") == 1 and stages[-1] == "done"
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not any(str(node.data_dir) in e["message"] for e in events)  # no server path in the progress
    with node.client(node.tokens["alice"]) as client:
        view = client.get(f"/v1/jobs/{sample_job['id']}").json()
        assert view["state"] == "done" and view["source"] == "http"
        assert sample_job["id"] in [j["id"] for j in client.get("/v1/jobs").json()]
        files = {name: client.get(f"/v1/jobs/{sample_job['id']}/files/{name}") for name in REPORT_SET}
        assert all(r.status_code == 200 for r in files.values()), {k: r.status_code for k, r in files.items()}
        assert files["report.pdf"].content.startswith(b"%PDF")
        # no attribution without the explanation, and nothing but the report set is served
        for name in ("attribution.nii.gz", "attribution.seg.nrrd", "../node.toml", "audit.log"):
            assert client.get(f"/v1/jobs/{sample_job['id']}/files/{name}").status_code == 404
    remote = json.loads(files["report.json"].text)
    local = json.loads((sample_job["local"] / "report.json").read_text(encoding="utf-8"))
    # the same draft a local `report` writes: greedy/consensus defaults, model, checks, warnings
    assert _comparable(remote) == _comparable(local)
    assert remote["text"] == local["text"] and remote["input"]["sha256"] == local["input"]["sha256"]
    assert remote["input"]["identity"] == IDENTITY  # the station's identity travelled with the volume
    local_txt = (sample_job["local"] / "report.txt").read_text(encoding="utf-8")
    assert re.sub(r"created \S+", "", files["report.txt"].text) == re.sub(r"created \S+", "", local_txt)
    # the audit log: who, which job, what happened; identifiers only, never the report's text
    audit = [json.loads(line) for line in (node.data_dir / "audit.log").read_text().splitlines()]
    mine = [a for a in audit if a.get("job") == sample_job["id"]]
    assert {"submit", "download"} <= {a["action"] for a in mine} and all(a["who"] == "alice" for a in mine)
    assert remote["text"][:30] not in (node.data_dir / "audit.log").read_text()


@shared
def test_fields_and_options_are_checked_like_the_local_workers(node):
    """Header fields and explanation options travel with a volume; the wrong ones are refused (422) with the
    local worker's own one line, before any upload is kept."""
    before = set((node.data_dir / "uploads").glob("*")) if (node.data_dir / "uploads").is_dir() else set()
    with node.client(node.tokens["bob"]) as client:
        for params, problem in (
            ({"options": json.dumps({"n_samples": 5})}, "n_samples must be between 10 and 100000"),
            ({"options": json.dumps({"speed": 1})}, "unknown explanation option"),
            ({"options": "[1, 2"}, "must be JSON objects"),
            ({"fields": json.dumps({"patient_name": 7})}, "'fields' must be an object"),
        ):
            answer = client.post("/v1/jobs", params={"format": "nii.gz", **params}, content=b"x" * 100)
            assert answer.status_code == 422 and problem in answer.text, (params, answer.text)
    after = set((node.data_dir / "uploads").glob("*")) if (node.data_dir / "uploads").is_dir() else set()
    assert after == before


@shared
def test_status_and_readiness(node):
    with node.client(node.tokens["bob"]) as client:
        ready = client.get("/ready").json()
        assert ready["ready"] and ready["workers"] >= 1
        status = client.get("/v1/status").json()
        assert set(status["jobs"]) == {"queued", "running", "done", "failed", "cancelled"}
        assert any(w["alive"] and w["device"] for w in status["workers"].values())
        assert "BrainGemma3D node" in client.get("/status").text
        assert client.get("/openapi.json").json()["info"]["title"] == "BrainGemma3D node"
    result = node.cli("status")
    assert result.returncode == 0, result.stderr
    assert "jobs" in json.loads(result.stdout)


# --- 2. security --------------------------------------------------------------------------------------------


class _Unchanged:
    """Nothing stored by a refused request: no job, no file under the data folder (uploads/, tmp/...)."""

    def __init__(self, node: Node):
        self.node = node

    def __enter__(self):
        self.jobs, self.files = self.node.job_ids(), self.node.files()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert self.node.job_ids() == self.jobs, "a refused request created a job"
            assert self.node.files() == self.files, sorted(self.node.files() - self.files)
            with self.node.client(self.node.tokens["alice"]) as client:  # the node still serving
                assert client.get("/health").status_code == 200
                assert client.get("/v1/jobs").status_code == 200
        return False


@shared
def test_missing_wrong_and_revoked_tokens(node):
    body = SAMPLE.read_bytes()
    with _Unchanged(node), node.client() as anonymous:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6eA=="}):
            for method, path in (
                ("GET", "/v1/jobs"),
                ("GET", "/v1/status"),
                ("POST", "/v1/jobs?format=nii.gz"),
            ):
                r = anonymous.request(
                    method, path, headers=headers, content=body if method == "POST" else None
                )
                assert r.status_code == 401, (headers, path, r.status_code)
                assert r.headers.get("www-authenticate") == "Bearer"
        assert anonymous.get("/health").status_code == 200  # health needs no token
    created = node.cli("tokens", "create", "dave")  # as an administrator makes one: printed once
    assert created.returncode == 0 and "shown once" in created.stderr, created.stderr
    dave = created.stdout.strip()
    assert len(dave) >= 40 and dave not in (node.data_dir / "tokens.json").read_text()  # stored hashed
    with node.client(dave) as client:
        assert client.get("/v1/jobs").status_code == 200
        revoked = node.cli("tokens", "revoke", "dave")
        assert revoked.returncode == 0, revoked.stderr
        with _Unchanged(node):
            assert client.get("/v1/jobs").status_code == 401
            assert client.post("/v1/jobs", params={"format": "nii.gz"}, content=body).status_code == 401
    listing = node.cli("tokens", "list")
    assert listing.returncode == 0 and "revoked" in next(
        x for x in listing.stdout.splitlines() if "dave" in x
    )
    assert "refused" in (node.data_dir / "audit.log").read_text()


@shared
def test_another_users_job_is_not_found(node, alice_job):
    job = alice_job
    with _Unchanged(node), node.client(node.tokens["bob"]) as bob:
        for method, path in (
            ("GET", f"/v1/jobs/{job}"),
            ("GET", f"/v1/jobs/{job}/events"),
            ("GET", f"/v1/jobs/{job}/files/report.json"),
            ("POST", f"/v1/jobs/{job}/cancel"),
            ("GET", "/v1/jobs/..%2F..%2Fnode.toml"),
        ):
            r = bob.request(method, path)
            assert r.status_code == 404, (path, r.status_code)
            assert "report" not in r.text.lower() or path.endswith("report.json")
        assert job not in [j["id"] for j in bob.get("/v1/jobs").json()]
    assert node.store.get(job)["state"] == "queued"  # bob's cancel changed nothing
    with node.client(node.tokens["alice"]) as alice:  # alice's own does
        assert alice.post(f"/v1/jobs/{job}/cancel").json()["state"] == "cancelled"


@shared
def test_upload_names_never_become_paths(node, tmp_path):
    evil = ["../../x.dcm", "/etc/bg3d-evil-x", "..\\..\\y.dcm", "a/../../../z.dcm", "ok/../../w.dcm"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name in evil:
            info = zipfile.ZipInfo("placeholder")
            info.filename = name  # as a hostile client writes it (ZipInfo would normalise it)
            z.writestr(info, b"not DICOM " + name.encode())
    (tmp_path / "evil.zip").write_bytes(archive.getvalue())
    before = node.files()
    outside = {p for p in node.folder.parent.rglob("*") if p.is_file()}
    with node.client(node.tokens["alice"]) as client:
        job = submit(client, tmp_path / "evil.zip", "zip")
        view = wait_job(client, job, timeout=120)
    assert view["state"] == "failed" and view["error"], view  # not a DICOM series: a clear failure
    new = sorted(node.files() - before)
    upload = [Path(p) for p in new if p.startswith("uploads/")]
    assert sorted(p.name for p in upload) == [f"{i:05d}.dcm" for i in range(1, len(evil) + 1)], new
    assert all(p.parts[0] == "uploads" and p.parts[2] == "dicom" and len(p.parts) == 4 for p in upload)
    assert not Path("/etc/bg3d-evil-x").exists()
    assert {p for p in node.folder.parent.rglob("*") if p.is_file()} - outside <= {
        node.data_dir / p for p in new
    } | {node.data_dir / "audit.log"}
    for name in ("x.dcm", "y.dcm", "z.dcm", "w.dcm"):
        assert not list(node.folder.parent.rglob(name)), name
    for base in (REPO, *(node.data_dir / p.parent for p in upload)):  # the node's cwd, the zip's folder
        assert not any((base / name).resolve().exists() for name in evil if "\\" not in name)


@shared
def test_oversized_upload_is_refused(node):
    too_big = b"\0" * int((MAX_UPLOAD_MB + 1) * 1e6)

    def chunks():  # no Content-Length: the node counts what arrives
        for i in range(0, len(too_big), 1 << 16):
            yield too_big[i : i + (1 << 16)]

    with _Unchanged(node), node.client(node.tokens["alice"]) as client:
        declared = client.post("/v1/jobs", params={"format": "nii.gz"}, content=too_big)
        assert declared.status_code == 413 and "MB" in declared.json()["detail"]
        streamed = client.post("/v1/jobs", params={"format": "nii.gz"}, content=chunks())
        assert streamed.status_code == 413, streamed.text
        assert client.post("/v1/jobs", params={"format": "nii.gz"}, content=b"").status_code == 422
        assert client.post("/v1/jobs", params={"format": "exe"}, content=b"x").status_code == 422


@shared
def test_zip_bomb_is_refused(node, tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("series/00001.dcm", "w", force_zip64=True) as member:
            zeros = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MB of zeros: about 200 KB packed
                member.write(zeros)
    assert bomb.stat().st_size < MAX_UPLOAD_MB * 1e6
    small = tmp_path / "small-bomb.zip"  # within the unpacked limit, but 1000 times its packed size
    with zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("00001.dcm", b"\0" * (10 << 20))
    with _Unchanged(node), node.client(node.tokens["alice"]) as client:
        for archive in (bomb, small):
            r = client.post("/v1/jobs", params={"format": "zip"}, content=archive.read_bytes())
            assert r.status_code == 422 and ("zip" in r.json()["detail"]), r.text
        junk = client.post("/v1/jobs", params={"format": "zip"}, content=b"PK\3\4 not a zip")
        assert junk.status_code == 422


def _raw_request(port: int, data: bytes, *, wait_s: float) -> tuple[bytes, float]:
    """Send ``data`` on a raw connection and stall: (what the node answered, seconds until it closed)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            pass
    return answer, time.monotonic() - started


@shared
def test_slow_client_is_cut_off(node):
    token = node.tokens["alice"]
    bound = REQUEST_TIMEOUT_S + 6
    with _Unchanged(node):
        # headers that never end
        answer, took = _raw_request(
            node.port, b"POST /v1/jobs?format=nii.gz HTTP/1.1\r\nHost: 127", wait_s=bound
        )
        assert took < bound and (answer == b"" or answer.startswith(b"HTTP/1.1 408")), (answer, took)
        # a body that stops after a few bytes
        head = (
            "POST /v1/jobs?format=nii.gz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        answer, took = _raw_request(node.port, head + b"\x1f\x8b\x08", wait_s=bound)
        assert took < bound and answer.startswith(b"HTTP/1.1 408"), (answer, took)
        # many of them at once do not stop the others
        stalled = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(20)]
        try:
            for s in stalled:
                s.sendall(b"GET /v1/jobs HTTP/1.1\r\n")
            with node.client(token, timeout=5) as client:
                assert client.get("/v1/jobs").status_code == 200
        finally:
            for s in stalled:
                s.close()


@shared
def test_dicom_associations_off_the_allow_list_are_refused(node):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    port = node.settings["dicom"]["port"]
    incoming = node.data_dir / "incoming"
    before = {p for p in incoming.rglob("*")} if incoming.is_dir() else set()

    def associate(ae_title: str):
        ae = AE(ae_title=ae_title)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 10
        return ae.associate("127.0.0.1", port, ae_title="BG3DNODE")

    with _Unchanged(node):
        for caller in ("STRANGER", "ELSEWHERE"):  # not listed; listed only from 127.0.0.2
            assoc = associate(caller)
            assert assoc.is_rejected and not assoc.is_established, caller
        allowed = associate("PACS")  # the allow-listed caller at its address: accepted
        try:
            assert allowed.is_established
            assert allowed.send_c_echo().Status == 0x0000
        finally:
            allowed.release()
    after = {p for p in incoming.rglob("*")} if incoming.is_dir() else set()
    assert after == before
    audit = (node.data_dir / "audit.log").read_text()
    assert "dicom:STRANGER@127.0.0.1" in audit and "dicom:ELSEWHERE@127.0.0.1" in audit


def test_plain_http_only_on_loopback(tmp_path):
    from helpers import run_cli
    from node_fixtures import write_toml

    from BrainGemma3DLib.node.config import load_config

    config = {"node": {"data_dir": "data"}, "http": {"host": "192.0.2.10", "port": 8787}}
    refused = run_cli("serve", "--config", str(write_toml(tmp_path / "node.toml", config)), "status")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "plain HTTP" in lines[0] and "allow_plain_http" in lines[0], refused.stderr
    config["http"]["allow_plain_http"] = True  # a TLS proxy in front: said explicitly
    assert load_config(write_toml(tmp_path / "proxied.toml", config)).http_host == "192.0.2.10"


def test_https_and_the_per_user_job_limit(tmp_path):
    """A node with the certificate and key from its config and no worker (jobs stay queued): HTTPS works,
    plain HTTP to it does not; a user with as many queued jobs as allowed gets 429 for the next, nothing
    stored."""
    import httpx

    with running_redis(tmp_path / "redis") as redis:
        node = Node(tmp_path / "node", redis, node={"workers": 0}, http={"jobs_per_user": 2}, tls=True)
        node.tokens = {"erin": node.token("erin"), "alice": node.token("alice")}
        node.start(workers=0)
        try:
            with node.client(node.tokens["erin"]) as erin:
                assert erin.get("/health").json() == {"ok": True}
                first = [submit(erin, SAMPLE) for _ in range(2)]
                with _Unchanged(node):
                    refused = erin.post("/v1/jobs", params={"format": "nii.gz"}, content=SAMPLE.read_bytes())
                    assert refused.status_code == 429 and "2" in refused.json()["detail"]
                with node.client(node.tokens["alice"]) as alice:  # the limit is per user
                    assert submit(alice, SAMPLE)
                for job in first:
                    assert erin.post(f"/v1/jobs/{job}/cancel").json()["state"] == "cancelled"
                assert submit(erin, SAMPLE)  # room again
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{node.port}/health", timeout=5)
            with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate
                httpx.get(f"{node.url}/health", timeout=5)
        finally:
            node.stop()


# --- 3. crashes: no job lost, none drafted twice ------------------------------------------------------------


def _wait_stage(node: Node, job: str, stage: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while node.store.get(job)["stage"] != stage:
        assert node.store.get(job)["state"] not in FINAL, node.store.get(job)
        assert time.monotonic() < deadline, f"{job} never reached {stage}:\n{node.log_tail()}"
        time.sleep(0.2)


def _results(node: Node, job: str) -> list[str]:
    folder = node.data_dir / "results" / job
    siblings = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{job}")]
    return sorted(p.name for p in folder.iterdir()) + siblings


@pytest.mark.slow
def test_node_killed_mid_job_and_restarted(tmp_path):
    """SIGKILL of the node and its worker while a job drafts; the same node started again: each job submitted
    ends done once (one result set, one "done"), and the study is drafted once after the restart (the second
    job on the same input shares its result)."""
    with running_redis(tmp_path / "redis") as redis:
        node = Node(tmp_path / "node", redis, node={"redelivery_after_s": 5})
        token = node.token("alice")
        node.start()
        try:
            with node.client(token) as client:
                jobs = [submit(client, SAMPLE) for _ in range(2)]
            _wait_stage(node, jobs[0], "generate")
            node.kill()
            assert node.store.get(jobs[0])["state"] == "running"
            restarted = time.monotonic()
            node.start(workers=0)
            with node.client(token) as client:
                views = [wait_job(client, job, timeout=300) for job in jobs]
            took = time.monotonic() - restarted
            assert [v["state"] for v in views] == ["done", "done"], (views, node.log_tail())
            drafted_after = 0
            for job in jobs:
                stages = [e["stage"] for e in node.store.events(job)]
                assert stages.count("done") == 1 and stages[-1] == "done", stages
                assert _results(node, job) == sorted(REPORT_SET)
                restart = max(
                    (i for i, e in enumerate(node.store.events(job)) if "again" in e["message"]), default=-1
                )
                drafted_after += stages[restart + 1 :].count("generate")
            assert "again" in " ".join(e["message"] for e in node.store.events(jobs[0]))
            assert drafted_after == 1, [[e["stage"] for e in node.store.events(j)] for j in jobs]
            assert took < 240
        finally:
            node.stop()


@pytest.mark.slow
def test_two_workers_one_killed_mid_job(tmp_path):
    """Two workers on one broker (the node itself runs none); the one drafting is killed with its process
    group: the other takes the job over and finishes it, once. The job asks for the explanation (the one
    explained job of this file): its result set has the attribution files too, served like the others."""
    with running_redis(tmp_path / "redis") as redis:
        node = Node(tmp_path / "node", redis, node={"workers": 0, "redelivery_after_s": 5})
        token = node.token("alice")
        node.start(workers=0)
        try:
            workers = [node.start_worker() for _ in range(2)]
            node.wait_ready(2)
            with node.client(token) as client:
                job = submit(client, SAMPLE, explain=True)
                _wait_stage(node, job, "generate")
                first = node.store.get(job)["worker"]
                victim = next(w for w in workers if first.endswith(f":{w.pid}"))
                node.kill_worker(victim)
                killed = time.monotonic()
                view = wait_job(client, job, timeout=400)
                assert view["state"] == "done", (view, node.log_tail())
                assert view["files"] == [*REPORT_SET, *EXPLAINED], view
                served = {name: client.get(f"/v1/jobs/{job}/files/{name}") for name in EXPLAINED}
            assert all(r.status_code == 200 and r.content for r in served.values())
            took = time.monotonic() - killed
            survivor = next(w for w in workers if w is not victim)
            assert node.store.get(job)["worker"].endswith(f":{survivor.pid}")
            stages = [e["stage"] for e in node.store.events(job)]
            assert stages.count("done") == 1 and stages[-1] == "done", stages
            assert "explain" in stages
            assert _results(node, job) == sorted([*REPORT_SET, *EXPLAINED])
            assert took < 300
        finally:
            node.stop()


# --- 4. load ------------------------------------------------------------------------------------------------


@shared
def test_twenty_concurrent_clients(node, alice_job):
    """20 clients at once, each an authenticated call (its jobs, a job, the status): every one answered."""
    job, token, answers = alice_job, node.tokens["alice"], []
    paths = ["/v1/jobs", f"/v1/jobs/{job}", "/v1/status", "/ready"]
    start = threading.Barrier(20)

    def one(i: int) -> None:
        with node.client(token, timeout=10) as client:
            start.wait(timeout=30)
            began = time.monotonic()
            try:
                status = client.get(paths[i % len(paths)]).status_code
            except Exception as exc:  # a refused or dropped connection counts as unanswered
                status = type(exc).__name__
            answers.append((status, time.monotonic() - began))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    total = time.monotonic() - began
    assert [a[0] for a in answers] == [200] * 20, answers
    assert total < 10 + 5 and max(a[1] for a in answers) < 10, (total, answers)  # +5: the clients' own start


# --- 5. retention -------------------------------------------------------------------------------------------


@pytest.fixture
def bare_node(tmp_path):
    """A node's config, data folder and Redis, without its processes (the retention tests need no more)."""
    with running_redis(tmp_path / "redis") as redis:
        node = Node(tmp_path / "node", redis, node={"retention_hours": 2})
        node.data_dir.mkdir(parents=True)
        yield node


def _received_job(node: Node, study: str, *, state: str = "done", **fields) -> str:
    """A job as the DICOM listener makes one: its instances under incoming/STUDY, its results folder."""
    folder = node.data_dir / "incoming" / study
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{study}.1.dcm").write_bytes(b"DICM")
    store = node.store
    job = store.create("dicom:PACS", source="dicom", inputs=[str(folder)], options={}, study=study)
    results = node.data_dir / "results" / job
    results.mkdir(parents=True)
    (results / "report.json").write_text("{}")
    store.update(job, state=state, results=str(results), **fields)
    return job


def test_purge_a_study(bare_node):
    from BrainGemma3DLib.io.errors import InputError
    from BrainGemma3DLib.node.config import load_config
    from BrainGemma3DLib.node.retention import purge_study

    node, store = bare_node, bare_node.store
    received = _received_job(node, "1.2.3.4")
    drafting = _received_job(node, "1.2.3.4", state="running")  # received again, a worker drafting it
    fetched = store.create("alice", source="study", inputs=[], options={}, study="1.2.3.4")  # still queued
    kept = [_received_job(node, "1.2.3.4.1"), _received_job(node, "1.2.3.5")]  # other studies
    result = node.cli("purge", "--study", "1.2.3.4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 job(s)"), result.stdout
    assert all(store.get(job) is None for job in (received, drafting, fetched))
    # the worker drafting it is told to stop, and what it still reports recreates no record
    assert store.cancel_requested(drafting)
    store.event(drafting, "generate", 0.5, "writing the draft")
    assert not store.update(drafting, results="x") and store.get(drafting) is None
    assert store.events(drafting) == []
    assert not (node.data_dir / "incoming" / "1.2.3.4").exists()
    assert not (node.data_dir / "results" / received).exists()
    assert all(store.get(job) is not None for job in kept)
    assert (node.data_dir / "incoming" / "1.2.3.4.1").is_dir() and (
        node.data_dir / "incoming" / "1.2.3.5"
    ).is_dir()
    audit = [json.loads(line) for line in (node.data_dir / "audit.log").read_text().splitlines()]
    assert any(a["action"] == "purge" and a["study"] == "1.2.3.4" for a in audit)
    # a study is a UID, never a path to remove
    refused = node.cli("purge", "--study", "../..")
    assert refused.returncode == 2 and "UID" in refused.stderr, refused.stderr
    for bad in ("..", "1.2.3.5/../..", "*", ""):
        with pytest.raises(InputError, match="UID"):
            purge_study(load_config(node.config), store, bad)
    assert store.get(kept[1]) is not None and node.config.is_file() and (node.data_dir / "incoming").is_dir()


def test_purge_expired(bare_node):
    from BrainGemma3DLib.node.config import load_config
    from BrainGemma3DLib.node.retention import GRACE_S, purge_expired

    node, now = bare_node, time.time()
    cfg, store = load_config(node.config), node.store
    delivered = _received_job(node, "1.2.3.6", fetched="2026-01-01T00:00:00Z")
    waiting = _received_job(node, "1.2.3.7")  # done, not yet fetched nor sent
    running = _received_job(node, "1.2.3.8", state="running")
    assert purge_expired(cfg, store, now=now) == []
    assert purge_expired(cfg, store, now=now + GRACE_S + 5) == [delivered]
    assert not (node.data_dir / "incoming" / "1.2.3.6").exists() and store.get(delivered) is None
    assert not (node.data_dir / "results" / delivered).exists()
    assert purge_expired(cfg, store, now=now + 2 * 3600 + 5) == [waiting]  # retention_hours = 2
    assert not (node.data_dir / "incoming" / "1.2.3.7").exists()
    assert store.get(running) is not None and (node.data_dir / "incoming" / "1.2.3.8").is_dir()
