"""The node's configuration (``node.toml``): one file a department edits, checked whole before anything
starts.

Why checked whole: a node that starts with a typo in its allow-list or a missing certificate fails late, in
front of a radiologist; every problem here is one line naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..io.errors import InputError

__all__ = ["NodeConfig", "load_config"]


@dataclass(frozen=True)
class Caller:
    """A DICOM peer allowed to send studies: its AE title and the address it calls from."""

    ae_title: str
    host: str


@dataclass(frozen=True)
class NodeConfig:
    """What one node (and each of its workers) runs with; see docs/node.md for every key."""

    path: Path
    data_dir: Path
    broker: str = "redis://127.0.0.1:6379/0"
    model: str = "demo"
    device: str = "auto"
    explain: bool = True
    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = 8787
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = False
    max_upload_mb: float = 512.0
    max_unpacked_mb: float = 2048.0
    request_timeout_s: float = 60.0
    jobs_per_user: int = 4
    # DICOM listener (C-ECHO, C-STORE in); disabled without a port
    dicom_ae_title: str = "BG3DNODE"
    dicom_host: str = "127.0.0.1"
    dicom_port: int | None = None
    dicom_allow: tuple[Caller, ...] = ()
    stable_after_s: float = 10.0
    # Results to the PACS: "AET@HOST:PORT" (C-STORE) or a DICOMweb URL (STOW-RS); and where studies are
    # fetched from
    pacs_destination: str | None = None
    pacs_source: str | None = None
    node_ae_title: str = "BG3DNODE"
    # Patient data kept only as long as needed
    retention_hours: float = 24.0
    # A job a worker took but did not finish (killed, machine lost) goes back to the queue after this long
    redelivery_after_s: float = 3600.0
    # Model-holding worker processes ``serve`` starts on this machine (0: workers run elsewhere)
    workers: int = 1

    @property
    def plain_http(self) -> bool:
        return self.tls_cert is None

    @property
    def url(self) -> str:
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.http_host}:{self.http_port}"

    def folder(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        if host == "localhost":
            return True
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _get(table: dict, key: str, kind, default, where: str):
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InputError(f"[{where}] {key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def load_config(path: str | os.PathLike) -> NodeConfig:
    """Read and check ``node.toml``; one :class:`InputError` line naming the file and the key otherwise."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"not a readable TOML file ({exc})", path) from None
    try:
        return _parse(path, data)
    except InputError as exc:
        raise InputError(exc.problem, path) from None


def _parse(path: Path, data: dict) -> NodeConfig:
    known = {"node", "http", "dicom", "pacs"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    node, http, dicom, pacs = (data.get(k, {}) for k in ("node", "http", "dicom", "pacs"))
    data_dir = _get(node, "data_dir", str, None, "node")
    if not data_dir:
        raise InputError("[node] data_dir is required (where received studies, jobs and results live)")
    base = path.parent
    resolve = lambda p: None if p is None else (base / p).resolve()  # noqa: E731 (paths relative to node.toml)
    tls_cert, tls_key = (
        resolve(_get(http, "tls_cert", str, None, "http")),
        resolve(_get(http, "tls_key", str, None, "http")),
    )
    if (tls_cert is None) != (tls_key is None):
        raise InputError("[http] tls_cert and tls_key go together")
    for file in (tls_cert, tls_key):
        if file is not None and not file.is_file():
            raise InputError(f"[http] {file} is not a file")
    host = _get(http, "host", str, "127.0.0.1", "http")
    allow_plain = _get(http, "allow_plain_http", bool, False, "http")
    if tls_cert is None and not _is_loopback(host) and not allow_plain:
        raise InputError(
            f"[http] plain HTTP on {host} would send tokens and reports unencrypted: give tls_cert and "
            "tls_key, "
            "listen on 127.0.0.1, or set allow_plain_http = true (a TLS proxy in front)"
        )
    callers = []
    for entry in _get(dicom, "allow", list, [], "dicom"):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("ae_title"), str)
            or not isinstance(entry.get("host"), str)
        ):
            raise InputError('[dicom] allow entries are tables: { ae_title = "ORTHANC", host = "127.0.0.1" }')
        callers.append(Caller(entry["ae_title"].strip(), entry["host"].strip()))
    port = _get(dicom, "port", int, None, "dicom")
    if port is not None and not callers:
        raise InputError(
            "[dicom] port is set but allow is empty: no PACS could send (list each AE title and host)"
        )
    for name, value in (("[http] port", _get(http, "port", int, 8787, "http")), ("[dicom] port", port)):
        if value is not None and not 0 < value < 65536:
            raise InputError(f"{name} must be between 1 and 65535")
    numbers = {
        "max_upload_mb": _get(http, "max_upload_mb", float, 512.0, "http"),
        "max_unpacked_mb": _get(http, "max_unpacked_mb", float, 2048.0, "http"),
        "request_timeout_s": _get(http, "request_timeout_s", float, 60.0, "http"),
        "stable_after_s": _get(dicom, "stable_after_s", float, 10.0, "dicom"),
        "retention_hours": _get(node, "retention_hours", float, 24.0, "node"),
        "redelivery_after_s": _get(node, "redelivery_after_s", float, 3600.0, "node"),
    }
    for key, value in numbers.items():
        if not value > 0:
            raise InputError(f"{key} must be positive")
    jobs = _get(http, "jobs_per_user", int, 4, "http")
    if jobs < 1:
        raise InputError("[http] jobs_per_user must be at least 1")
    workers = _get(node, "workers", int, 1, "node")
    if workers < 0:
        raise InputError("[node] workers must be 0 or more")
    return NodeConfig(
        path=path,
        data_dir=resolve(data_dir),
        broker=_get(node, "broker", str, "redis://127.0.0.1:6379/0", "node"),
        model=_get(node, "model", str, "demo", "node"),
        device=_get(node, "device", str, "auto", "node"),
        explain=_get(node, "explain", bool, True, "node"),
        workers=workers,
        http_host=host,
        http_port=_get(http, "port", int, 8787, "http"),
        tls_cert=tls_cert,
        tls_key=tls_key,
        allow_plain_http=allow_plain,
        jobs_per_user=jobs,
        dicom_ae_title=_get(dicom, "ae_title", str, "BG3DNODE", "dicom"),
        dicom_host=_get(dicom, "host", str, "127.0.0.1", "dicom"),
        dicom_port=port,
        dicom_allow=tuple(callers),
        pacs_destination=_get(pacs, "destination", str, None, "pacs"),
        pacs_source=_get(pacs, "source", str, None, "pacs"),
        node_ae_title=_get(pacs, "ae_title", str, "BG3DNODE", "pacs"),
        **numbers,
    )
