"""The Slicer panel's client of a BrainGemma3D node (``braingemma3d serve``), shaped like the local worker.

A reading station without a GPU sends the volume it wrote for the local worker to the department's node, shows
the node's progress events, can cancel, and gets back the same result the local worker gives (``report``: the
report.json value; ``files``: local paths of json, text, pdf and, with an explanation, attribution and
segmentation), so the panel places it in the scene exactly as a local run. Signing stays on the station: only
the volume goes to the node, and only the draft's files come back.

Standard library only (``http.client``, ``ssl``): Slicer's Python needs nothing new for it. TLS is verified
(the system's trust store, or a CA file the hospital gives); plain ``http://`` is accepted only for a node on
this computer (loopback), because the token would otherwise cross the network readable. Every network call has
a timeout and every failure becomes one :class:`NodeError` the panel shows as it is: an unreachable node, a
refused token, a refused volume, a failed job, never a hang.

Like :class:`~BrainGemma3DLib.slicer.engine_client.EngineProcess`, :class:`NodeRun` does its waiting in a
thread that only moves events into a ``queue.Queue``; the panel's main-thread timer drains it with
:meth:`NodeRun.events`, so no Qt, VTK or scene call happens off the main thread.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from pathlib import Path

from .engine_client import EngineError

__all__ = ["RESULT_FILES", "NodeClient", "NodeError", "NodeRun", "upload_format"]

#: The node's result files -> the keys of the local worker's ``files`` (what ``showResults`` reads).
RESULT_FILES = {
    "report.json": "json",
    "report.txt": "text",
    "report.pdf": "pdf",
    "attribution.nii.gz": "attribution",
    "attribution.seg.nrrd": "segmentation",
}
#: File name endings -> the node's ``format`` parameter.
FORMATS = ((".nii.gz", "nii.gz"), (".nii", "nii"), (".nrrd", "nrrd"), (".mha", "mha"), (".zip", "zip"))
#: A result file larger than this is refused (the report set is a few MB; this keeps a wrong server from
#: filling the station's disk).
MAX_DOWNLOAD_BYTES = 1 << 30
USER_AGENT = "BrainGemma3D-Slicer"


class NodeError(EngineError):
    """A failed node request or job, as the panel shows it: one clear message; ``status``: the HTTP status."""

    def __init__(self, message, *, status=None, cancelled=False, debug=None):
        super().__init__(message, cancelled=cancelled, debug=debug)
        self.status = status


def upload_format(path) -> str:
    """The node's ``format`` for a file: nii.gz, nii, nrrd, mha or zip (from its name)."""
    name = str(path).lower()
    for suffix, fmt in FORMATS:
        if name.endswith(suffix):
            return fmt
    raise NodeError(f"{Path(path).name}: a node takes NIfTI, NRRD, MetaImage or a zip of a DICOM series")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _detail(body: bytes) -> str:
    """The node's one-line reason (FastAPI's ``{"detail": ...}``), else the start of the body."""
    try:
        detail = json.loads(body.decode("utf-8")).get("detail")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(detail, list):  # a validation error: the fields and what is wrong with them
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail or "")


class NodeClient:
    """One node (``url``) and one user's ``token``: submit, follow, cancel, download.

    ``ca_file``: a PEM file of the certificate authorities to trust for the node's certificate (a hospital's
    own CA); without it the system's trust store. ``timeout``: seconds for connecting and for each answer;
    ``idle``: seconds the progress stream may stay silent before it is opened again (a long stage sends
    nothing; reopening also proves the node is still there).
    """

    def __init__(self, url: str, token: str, *, ca_file=None, timeout: float = 30.0, idle: float = 20.0):
        url = (url or "").strip()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise NodeError(f"{url or 'no URL'}: give the node's address as https://HOST:PORT")
        if parts.query or parts.fragment or parts.username:
            raise NodeError(f"{url}: the node's address takes no query, fragment or user name")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise NodeError(
                f"{url}: plain http:// would send the token and the images unencrypted; use https:// "
                "(http:// only for a node on this computer)"
            )
        token = (token or "").strip()
        if not token:
            raise NodeError("no token for the node: ask its administrator (braingemma3d serve tokens create)")
        if not token.isascii() or not token.isprintable() or " " in token:
            raise NodeError("the node's token has characters a token never has: paste it again")
        if ca_file and not Path(ca_file).is_file():
            raise NodeError(f"{ca_file}: the CA file for the node's certificate was not found")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port or (443 if self._https else 80)
        except ValueError:
            raise NodeError(f"{url}: not a valid port") from None
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._ca_file = str(ca_file) if ca_file else None
        self.timeout, self.idle = float(timeout), float(idle)

    # --- HTTP ------------------------------------------------------------------------------------------
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout, blocksize=1 << 16)
        try:
            context = ssl.create_default_context(cafile=self._ca_file)  # verifies the chain and the host name
        except (OSError, ssl.SSLError) as exc:
            raise NodeError(f"{self._ca_file}: not a readable CA file ({exc})") from None
        return http.client.HTTPSConnection(
            self._host, self._port, timeout=timeout, context=context, blocksize=1 << 16
        )

    def _open(self, method: str, path: str, *, body=None, headers=None, timeout=None):
        """Send one request; the open response (the caller reads and closes it). Errors become NodeError."""
        connection = self._connection(self.timeout if timeout is None else timeout)
        sent = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json, text/event-stream",
            **(headers or {}),
        }
        try:
            try:
                connection.request(method, self._prefix + path, body=body, headers=sent)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while the body was still going out (too large): its answer says why
            response = connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise NodeError(
                f"The node's certificate at {self.url} could not be verified ({exc.verify_message}): give "
                "the hospital's CA file, or check the address."
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise NodeError(self._unreachable(exc), debug=repr(exc)) from None
        response._bg3d_connection = connection  # closed with the response (see _close)
        if response.status >= 400:
            try:
                detail = _detail(response.read(65536))
            except (OSError, http.client.HTTPException):
                detail = ""
            self._close(response)
            raise self._refusal(response.status, detail)
        return response

    @staticmethod
    def _close(response) -> None:
        for thing in (response, getattr(response, "_bg3d_connection", None)):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass

    def _json(self, method: str, path: str, **kwargs):
        response = self._open(method, path, **kwargs)
        try:
            return json.loads(response.read(1 << 20).decode("utf-8"))
        except (ValueError, OSError, http.client.HTTPException) as exc:
            raise NodeError(
                f"The node at {self.url} sent an answer that is not JSON.", debug=repr(exc)
            ) from None
        finally:
            self._close(response)

    def _unreachable(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, socket.gaierror):
            why = "unknown host name"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is the node running?)"
        elif isinstance(exc, ssl.SSLError):
            why = f"TLS failed ({exc.reason or exc})"
        else:
            why = str(exc) or type(exc).__name__
        return f"Cannot reach the BrainGemma3D node at {self.url}: {why}."

    def _refusal(self, status: int, detail: str) -> NodeError:
        reason = f" ({detail})" if detail else ""
        messages = {
            401: "The node refused the token (missing, unknown or revoked): ask its administrator for a "
            "token (braingemma3d serve tokens create) and enter it under Run on.",
            403: f"The node refused this request{reason}.",
            404: f"The node does not know this job{reason}: it was purged, or belongs to another user.",
            408: f"The node gave up waiting for the upload{reason}: the network is too slow; try again.",
            413: f"The node refused the volume as too large{reason}.",
            422: f"The node refused the volume{reason}.",
            429: f"The node is busy with your other jobs{reason}: wait for one to finish, or cancel one.",
        }
        message = messages.get(status) or f"The node answered HTTP {status}{reason}."
        return NodeError(message, status=status)

    # --- the API -----------------------------------------------------------------------------------------
    def jobs(self) -> list:
        """The user's own jobs (also a check that the address and the token are right)."""
        return self._json("GET", "/v1/jobs")

    def submit(
        self, path, *, explain: bool = True, series: str | None = None, fields: dict | None = None,
        options: dict | None = None, progress=None,
    ) -> str:  # fmt: skip
        """Send a volume file (NIfTI, NRRD, MHA) or a zip of a DICOM series; the node's job id.

        ``fields``: the patient's and study's identity for the PDF (never invented); ``options``: the
        explanation's options (names as the local worker takes them). ``progress(sent_bytes, total_bytes)``
        hears the upload as it goes."""
        path = Path(path)
        fmt = upload_format(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise NodeError(f"{path}: cannot read the volume to send ({exc.strerror})") from None
        query = {"format": fmt, "explain": "true" if explain else "false"}
        if series:
            query["series"] = str(series)
        if fields:
            query["fields"] = json.dumps(dict(fields))
        if options:
            query["options"] = json.dumps(dict(options))
        with path.open("rb") as stream:
            body = _Counted(stream, size, progress)
            answer = self._json(
                "POST",
                "/v1/jobs?" + urllib.parse.urlencode(query),
                body=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=max(self.timeout, 120.0),
            )
        job = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(job, str) or not job.isalnum():
            raise NodeError(f"The node at {self.url} did not answer with a job id.", debug=repr(answer))
        return job

    def state(self, job: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job}")

    def cancel(self, job: str) -> dict:
        """Ask the node to stop the job (it stops at its next step); the job's record."""
        return self._json("POST", f"/v1/jobs/{job}/cancel")

    def events(self, job: str, *, skip: int = 0):
        """The job's progress from its event stream: ``{"stage", "fraction", "message"}`` dicts, then one
        ``{"end": record}`` when the job has ended. The first ``skip`` events (already seen) are left out.
        Raises ``TimeoutError`` when the stream stays silent ``idle`` seconds (the caller reopens it)."""
        response = self._open("GET", f"/v1/jobs/{job}/events", timeout=self.idle)
        try:
            kind, data, index = "message", [], 0
            while True:
                try:
                    raw = response.readline(1 << 20)
                except TimeoutError:  # socket.timeout is TimeoutError
                    raise TimeoutError("the node's event stream was silent") from None
                except (OSError, http.client.HTTPException) as exc:
                    raise NodeError(self._unreachable(exc), debug=repr(exc)) from None
                if not raw:  # the stream ended without "end": the caller opens it again
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    try:
                        value = json.loads("\n".join(data))
                    except ValueError:
                        value = {}
                    if kind == "end":
                        yield {"end": value if isinstance(value, dict) else {}}
                        return
                    if index >= skip and isinstance(value, dict):
                        yield value
                    index += 1
                    kind, data = "message", []
        finally:
            self._close(response)

    def download(self, job: str, names, folder) -> dict:
        """The result files ``names`` into ``folder``; ``{key: local path}`` with the local worker's keys."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name in names:
            if name not in RESULT_FILES:
                continue  # the node names its files; only the report set is taken, under its own names
            target = folder / name
            partial = target.with_name(name + ".part")
            response = self._open("GET", f"/v1/jobs/{job}/files/{name}", timeout=max(self.timeout, 60.0))
            try:
                written = 0
                with partial.open("wb") as sink:
                    while chunk := response.read(1 << 16):
                        written += len(chunk)
                        if written > MAX_DOWNLOAD_BYTES:
                            raise NodeError(
                                f"The node sent {name} larger than {MAX_DOWNLOAD_BYTES >> 20} MB."
                            )
                        sink.write(chunk)
                length = response.getheader("Content-Length")
                if length and length.isdigit() and int(length) != written:
                    raise NodeError(f"{name} arrived incomplete from the node ({written} of {length} bytes).")
            except (OSError, http.client.HTTPException) as exc:
                raise NodeError(self._unreachable(exc), debug=repr(exc)) from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            finally:
                self._close(response)
            os.replace(partial, target)
            files[RESULT_FILES[name]] = str(target)
        return files

    def result(self, job: str, names, folder) -> dict:
        """The local worker's result shape: ``{"report": report.json's value, "files": {...}}``."""
        files = self.download(job, names, folder)
        for needed in ("json", "text", "pdf"):
            if needed not in files:
                raise NodeError(f"The node's result lacks its {needed} file.")
        try:
            report = json.loads(Path(files["json"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NodeError("The node's report.json is not readable.", debug=repr(exc)) from None
        return {"report": report, "files": files, "job": job, "node": self.url}

    def follow(self, job: str, *, stop=lambda: False, deadline_s: float = 6 * 3600.0, retries: int = 3):
        """Progress events until the job ends; the last item is ``{"end": record}``. The stream is opened
        again after a silence (``idle``) or a dropped connection (``retries`` in a row at most); ``stop()``
        ends following; after ``deadline_s`` it fails."""
        seen, failures, deadline = 0, 0, time.monotonic() + deadline_s
        while not stop():
            if time.monotonic() > deadline:
                raise NodeError(
                    f"No result from the node after {deadline_s / 3600:g} h; the job keeps its id {job}."
                )
            try:
                for event in self.events(job, skip=seen):
                    failures = 0
                    if "end" in event:
                        yield event
                        return
                    seen += 1
                    yield event
                    if stop():
                        return
            except TimeoutError:
                continue  # a long stage: open the stream again (which also checks the node is there)
            except NodeError as exc:
                failures += 1
                if exc.status is not None or failures > retries:
                    raise
                time.sleep(min(2.0 * failures, 5.0))

    def report(
        self, path, folder, *, explain=True, series=None, fields=None, options=None, progress=None,
        stop=lambda: False, on_job=None,
    ):  # fmt: skip
        """Submit, follow, download: the whole Generate on the node. Returns the result or raises NodeError
        (``cancelled`` when the job was cancelled)."""
        progress = progress or (lambda stage, fraction, message: None)
        size = max(Path(path).stat().st_size, 1) if Path(path).is_file() else 1
        progress("upload", 0.0, f"sending the volume to the node ({size / 1e6:.1f} MB)")
        job = self.submit(
            path,
            explain=explain,
            series=series,
            fields=fields,
            options=options,
            progress=lambda sent, total: progress(
                "upload", sent / max(total, 1), "sending the volume to the node"
            ),
        )
        if on_job is not None:
            on_job(job)
        end = {}
        for event in self.follow(job, stop=stop):
            if "end" in event:
                end = event["end"]
                break
            progress(
                str(event.get("stage", "")),
                float(event.get("fraction") or 0.0),
                str(event.get("message", "")),
            )
        if stop() and not end:
            raise NodeError("Cancelled.", cancelled=True)
        state = end.get("state")
        if state == "cancelled":
            raise NodeError("Cancelled on the node; nothing was written.", cancelled=True)
        if state != "done":
            error = end.get("error") or end.get("message") or state or "unknown error"
            raise NodeError(f"The node could not draft this report: {error}")
        progress("download", 0.99, "fetching the report files from the node")
        return self.result(job, end.get("files") or [], folder)


class _Counted:
    """A file object for ``http.client``'s body that reports how much has been sent."""

    def __init__(self, stream, total: int, progress=None):
        self._stream, self._total, self._progress = stream, total, progress
        self._sent, self._last = 0, 0.0

    def read(self, size=-1):
        chunk = self._stream.read(size)
        self._sent += len(chunk)
        now = time.monotonic()
        if self._progress is not None and (now - self._last > 0.5 or self._sent >= self._total):
            self._last = now
            self._progress(self._sent, self._total)
        return chunk


class NodeRun:
    """One Generate on a node, run in a background thread; the panel drains :meth:`events` from its timer.

    :meth:`events` returns ``("progress", stage, fraction, message)`` items, then one
    ``("finished", result, error)``. :meth:`cancel` tells the node (in a thread of its own, so that a node
    that does not answer never blocks the panel) and finishes the run as cancelled once the node has been
    told, or could not be; a job the node had already finished is kept, as a local run keeps a report that was
    done before its cancel arrived.
    """

    def __init__(
        self, client: NodeClient, path, folder, *, explain=True, series=None, fields=None, options=None
    ):
        self.client = client
        self.folder = Path(folder)
        self.job: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(path, folder, explain, series, fields, options),
            name="BrainGemma3D node run",
            daemon=True,
        )
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self._finished

    def events(self) -> list:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def _finish(self, result, error) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._queue.put(("finished", result, error))

    def _run(self, path, folder, explain, series, fields=None, options=None) -> None:
        def progress(stage, fraction, message):
            if not self._finished:
                self._queue.put(("progress", stage, fraction, message))

        def on_job(job):
            self.job = job
            if self._stop.is_set():  # cancelled while the volume was being sent
                threading.Thread(target=self._tell_node, daemon=True).start()

        try:
            result = self.client.report(
                path,
                folder,
                explain=explain,
                series=series,
                fields=fields,
                options=options,
                progress=progress,
                stop=self._stop.is_set,
                on_job=on_job,
            )
        except NodeError as exc:
            if self._stop.is_set() and self.job is not None:
                return  # cancelled: _tell_node finishes the run once the node has been told
            self._finish(None, exc)
        except Exception as exc:  # a bug here must still end the run with a message, never leave it hanging
            self._finish(
                None, NodeError(f"The node run failed: {type(exc).__name__}: {exc}", debug=repr(exc))
            )
        else:
            self._finish(result, None)

    def cancel(self) -> None:
        """Stop following and tell the node; finishes the run as cancelled (unless the node was done)."""
        if self._stop.is_set() or self._finished:
            return
        self._stop.set()
        if self.job is not None:
            threading.Thread(target=self._tell_node, name="BrainGemma3D node cancel", daemon=True).start()
        # else: the upload is still going; on_job tells the node as soon as the job exists

    def _tell_node(self) -> None:
        try:
            record = self.client.cancel(self.job)
        except NodeError as exc:
            self._finish(
                None,
                NodeError(
                    f"Cancelled here; the node could not be told ({exc}): it may still draft this case, "
                    "whose results are not fetched.",
                    cancelled=True,
                ),
            )
            return
        if self._finished:
            return
        if record.get("state") == "done":  # finished before the cancel arrived: keep it, as a local run does
            try:
                self._finish(self.client.result(self.job, record.get("files") or [], self.folder), None)
            except NodeError as exc:
                self._finish(None, exc)
            return
        self._finish(
            None, NodeError("Cancelled; the node stops the job and nothing was written.", cancelled=True)
        )
