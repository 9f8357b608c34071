"""The AI node for the tests: a private ``redis-server`` and ``braingemma3d serve`` processes on loopback.

Everything a fixture starts is its own: ports the OS picks, a data folder under the test's temporary folder,
one Redis per fixture instance (so xdist workers and tests never share a broker), 127.0.0.1 only.  Node and
worker processes run in their own process group, so a test can SIGKILL one with every child (the node's
workers) and a fixture leaves none behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO, run_cli, system_tool

#: What a finished job's state is.
FINAL = ("done", "failed", "cancelled")


def free_port() -> int:
    """A port free on loopback now (the OS picks it: never a fixed number)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


# --- Redis --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    port: int
    process: subprocess.Popen

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[Redis]:
    """A private redis-server on a free loopback port, nothing saved to disk; stopped after. Skipped where
    redis-server is not installed (a failure under CI, where .ci/run installs it)."""
    binary = system_tool("redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(folder), "--logfile", str(folder / f"redis-{port}.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline and not _redis_answers(port):
            time.sleep(0.05)
        if process.poll() is None and _redis_answers(port):
            break
        process.kill()
        process.wait()
        if attempt == 2:  # a port taken in between: tried again on others
            raise RuntimeError(f"redis-server did not start (see {folder})")
    try:
        yield Redis(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- node.toml ----------------------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def write_toml(path: Path, sections: dict[str, dict]) -> Path:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def self_signed_tls(folder: Path) -> tuple[Path, Path]:
    """A throw-away TLS server certificate for 127.0.0.1 and localhost (its own trust anchor) and its key;
    returns (cert, key). The project's ``make_test_certificate`` makes document-signing certificates (no
    server name, no serverAuth), so this one is made here."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BrainGemma3D test node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "node.cert.pem", folder / "node.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# --- the node -----------------------------------------------------------------------------------------------


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class Node:
    """One ``braingemma3d serve`` node on loopback: its node.toml, data folder, process and log.

    ``node``, ``http``, ``dicom`` are the config's tables over the defaults here (explain off, one worker, the
    HTTP port free). Start with :meth:`start`; :meth:`kill` SIGKILLs the node and its workers at once."""

    def __init__(self, folder: Path, redis: Redis, *, node=None, http=None, dicom=None, tls: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.folder / "data"
        self.redis = redis
        self.port = free_port()
        self.tls = self_signed_tls(self.folder / "tls") if tls else None
        self.settings = {
            "node": {
                "data_dir": str(self.data_dir),
                "broker": redis.url(),
                "explain": False,
                "workers": 1,
                **(node or {}),
            },
            "http": {"host": "127.0.0.1", "port": self.port, **(http or {})},
        }
        if self.tls:
            self.settings["http"] |= {"tls_cert": str(self.tls[0]), "tls_key": str(self.tls[1])}
        if dicom:
            self.settings["dicom"] = dicom
        self.config = write_toml(self.folder / "node.toml", self.settings)
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "node.log"
        self.workers: list[subprocess.Popen] = []

    # --- addresses and clients ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else None

    def client(self, token: str | None = None, *, timeout: float = 30.0):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, verify=self.ssl_context() or True
        )

    @property
    def store(self):
        from BrainGemma3DLib.node.store import JobStore

        return JobStore(self.redis.url())

    def token(self, user: str) -> str:
        """A new token for ``user`` (what ``serve tokens create`` prints), made in this process."""
        from BrainGemma3DLib.node.security import Tokens

        return Tokens(self.data_dir).create(user)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``braingemma3d serve --config node.toml ARGS`` as an administrator runs it."""
        return run_cli("serve", "--config", str(self.config), *args)

    # --- processes ------------------------------------------------------------------------------------------
    def start(self, *, workers: int | None = None, timeout: float = 180.0) -> Node:
        """Start the node and wait until it answers ``/health`` and ``workers`` workers (default: the
        config's) say they are alive (their model loaded)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "BrainGemma3DLib", "serve", "--config", str(self.config)],
                cwd=REPO,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(self.settings["node"]["workers"] if workers is None else workers, timeout=timeout)
        return self

    def start_worker(self) -> subprocess.Popen:
        """One more ``serve worker`` process on this node's broker (its own process group)."""
        with (self.folder / f"worker-{len(self.workers) + 1}.log").open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "BrainGemma3DLib", "serve", "--config", str(self.config), "worker"],
                cwd=REPO,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(worker)
        return worker

    def alive_workers(self) -> dict[str, dict]:
        return {name: info for name, info in self.store.workers(fresh_s=15.0).items() if info["alive"]}

    def wait_ready(self, workers: int = 0, *, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the node exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with self.client(timeout=5) as client:
                    if client.get("/health").status_code == 200 and len(self.alive_workers()) >= workers:
                        return
            except Exception:  # not listening yet
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the node was not ready in {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the node and every process of its group (its workers) at once, as a crash would."""
        if self.process is not None:
            _kill_group(self.process)
            self.process.wait(timeout=30)
            self.process = None

    def kill_worker(self, worker: subprocess.Popen) -> None:
        _kill_group(worker)
        worker.wait(timeout=30)

    def stop(self) -> None:
        """Stop the node (and workers started here): SIGTERM, then SIGKILL of whatever remains."""
        processes = [p for p in [self.process, *self.workers] if p is not None]
        for p in processes:
            if p.poll() is None:
                _kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in processes:
            _kill_group(p)  # the group too: a worker child the node did not stop in time
            p.wait(timeout=30)
        self.process, self.workers = None, []

    def log_tail(self, lines: int = 40) -> str:
        logs = [self.log, *sorted(self.folder.glob("worker-*.log"))]
        out = []
        for path in logs:
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- jobs -----------------------------------------------------------------------------------------------
    def files(self) -> set[str]:
        """Every file under the data folder (relative), the audit log and token list aside: what a refused
        request must not add to."""
        if not self.data_dir.is_dir():
            return set()
        return {
            str(p.relative_to(self.data_dir))
            for p in self.data_dir.rglob("*")
            if p.is_file() and p.name not in ("audit.log", "tokens.json", "tokens.json.tmp")
        }

    def job_ids(self) -> set[str]:
        return {j["id"] for j in self.store.all_jobs()}


def submit(
    client, path: Path, fmt: str = "nii.gz", *, explain: bool = False, fields: dict | None = None
) -> str:
    """Send a volume (or zip) as a client does (``fields``: the PDF header's identity); returns the job id."""
    params = {"format": fmt, "explain": str(explain).lower()}
    if fields:
        params["fields"] = json.dumps(fields)
    response = client.post("/v1/jobs", params=params, content=path.read_bytes())
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_job(client, job: str, *, timeout: float = 300.0, states=FINAL) -> dict:
    """Poll ``GET /v1/jobs/ID`` until its state is one of ``states``; the job's view."""
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/v1/jobs/{job}").json()
        if view.get("state") in states:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job} still {view.get('state')} ({view.get('stage')}) after {timeout} s"
            )
        time.sleep(0.5)


def follow_events(client, job: str, *, timeout: float = 300.0) -> tuple[list[dict], dict]:
    """The job's server-sent events until its ``end`` event: (the progress events, the end event's view)."""
    import httpx

    events, end = [], None
    with client.stream("GET", f"/v1/jobs/{job}/events", timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data = "message", []
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                payload = json.loads("\n".join(data))
                if kind == "end":
                    end = payload
                    break
                events.append(payload)
                kind, data = "message", []
    assert end is not None, "the event stream ended without its end event"
    return events, end
