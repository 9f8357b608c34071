"""A real PACS for the tests: Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) on loopback, with
a throw-away configuration and storage folder, started for a test module and stopped after."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import missing_in_ci, system_tool

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass(frozen=True)
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int

    @property
    def peer(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback now, picked by the OS: never fixed numbers, so that parallel
    test workers and other programs do not collide (a port taken in between: the start is retried)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def running_orthanc(
    folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None
) -> Iterator[Orthanc]:
    """Orthanc on free ports (one per test module that asks, so one per xdist worker running it); its
    HTTP/DICOMweb answers loopback clients only; storage under ``folder``; stopped after. Started again on
    other ports if one was taken meanwhile. ``modalities``: the DICOM nodes it knows (its ``DicomModalities``:
    NAME -> (AE title, host, port)), which it sends studies to itself (``POST /modalities/NAME/store``)."""
    binary = system_tool("Orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        missing_in_ci(f"the Orthanc DICOMweb plugin ({DICOMWEB_PLUGIN}) is not installed")
    for attempt in range(3):
        try:
            process, server, log = _start_orthanc(binary, folder, modalities or {})
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _start_orthanc(binary: str, folder: Path, modalities: dict[str, tuple[str, str, int]]):
    server = Orthanc("ORTHANCTEST", *free_ports(2))
    config = {
        "Name": "BrainGemma3D test PACS",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": server.aet,
        "DicomPort": server.dicom_port,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "UnknownSopClassAccepted": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
        "DicomModalities": {name: list(peer) for name, peer in modalities.items()},
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (closed by the caller, or here on failure)
    process = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/system", timeout=2):
                return process, server, log
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                process.wait()
                log.close()
                raise RuntimeError(
                    "Orthanc did not start: " + (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                ) from None
            time.sleep(0.3)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a PACS that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set, after the file meta information (which each party writes its own way)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]
