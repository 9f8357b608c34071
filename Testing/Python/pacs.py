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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Orthanc listening on loopback only (DIMSE + HTTP/DICOMweb), storage under ``folder``; stopped after."""
    binary = system_tool("Orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        missing_in_ci(f"the Orthanc DICOMweb plugin ({DICOMWEB_PLUGIN}) is not installed")
    server = Orthanc("ORTHANCTEST", free_port(), free_port())
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
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/system", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "Orthanc did not start: "
                        + (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
