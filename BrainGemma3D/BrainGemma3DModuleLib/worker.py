"""The library's report worker (``python -m BrainGemma3DLib.engine``) driven from Slicer's event loop.

The model runs in its own process so that Slicer never freezes, survives the worker crashing or running out
of GPU memory, and keeps the model loaded between cases. A QTimer on the main thread reads the worker's
events (a reader thread inside ``BrainGemma3DLib.slicer.engine_client.EngineProcess`` only queues lines;
no Qt call happens off the main thread) and hands them to the running job's callbacks.
"""

import importlib.util
import logging
import os
import pathlib
import shutil

import qt
import slicer

from .i18n import _

#: Seconds a cancelled job gets to stop by itself before the worker process is killed.
CANCEL_GRACE_SECONDS = 10.0
POLL_INTERVAL_MS = 100


def pythonExecutable():
    """Slicer's Python as a program (PythonSlicer), to run the worker with Slicer's own packages.

    Not ``sys.executable``: inside Slicer that is the Slicer application, not a Python interpreter.
    PythonSlicer is on PATH inside Slicer (as ``slicer.util.executePythonModule`` relies on); its usual
    place under ``slicer.app.slicerHome`` is the fallback.
    """
    found = shutil.which("PythonSlicer")
    if found:
        return found
    program = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    candidate = pathlib.Path(slicer.app.slicerHome) / "bin" / program
    if candidate.is_file():
        return str(candidate)
    raise RuntimeError(_("Slicer's Python (PythonSlicer) was not found: the report worker cannot start."))


def libraryRoot():
    """The folder that holds ``BrainGemma3DLib`` (given to the worker on PYTHONPATH)."""
    spec = importlib.util.find_spec("BrainGemma3DLib")
    if spec is None or not spec.origin:
        raise RuntimeError(_("The BrainGemma3DLib library was not found."))
    return str(pathlib.Path(spec.origin).resolve().parent.parent)


class ReportWorker:
    """One worker process, started on first use and replaced if it dies; one job (a request chain) at a time.

    ``run(payloads, onProgress, onFinished)`` sends the payloads one after the other, each when the previous
    one succeeded; ``onFinished(result, error)`` gets the last result or the first error (an
    ``EngineError``: cancelled, out of memory, or the worker's message).
    """

    def __init__(self, workFolder):
        """``workFolder()`` returns the folder for the worker's log and working directory."""
        self._workFolder = workFolder
        self._engine = None
        self._job = None
        self._requestCount = 0
        self.deviceInfo = None  # {"device", "cuda_available"} once the worker has loaded a model
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    @property
    def busy(self):
        return self._job is not None

    def run(self, payloads, onProgress=None, onFinished=None):
        """Start a job: the payloads (``{"cmd": ...}`` requests) in order. Returns at once."""
        from BrainGemma3DLib.slicer.engine_client import Job

        if self.busy:
            raise RuntimeError(_("A report is already being generated."))
        progress = onProgress or (lambda stage, fraction, message: None)
        self._ensureEngine(progress)
        self._job = Job([self._request(p) for p in payloads], progress, onFinished)
        self._send(self._job.requests[0])

    def cancel(self):
        """Ask the worker to stop the job; kill it if it has not stopped after a grace period."""
        job = self._job
        if job is None or job.cancel_requested:
            return
        job.cancel_requested = True
        self._send(self._request({"cmd": "cancel", "job": job.current_id}))
        qt.QTimer.singleShot(int(CANCEL_GRACE_SECONDS * 1000), lambda: self._killIfStillRunning(job))

    def shutdown(self):
        """Stop the worker (module unload, application exit, clear cache); frees the model's memory."""
        self._job = None
        self._timer.stop()
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    # --- internals --------------------------------------------------------------------------------------
    def _ensureEngine(self, progress):
        """Start the worker once; it keeps the model loaded between cases. A dead one is replaced."""
        if self._engine is not None and self._engine.running():
            return
        if self._engine is not None:
            self._engine.close()
        progress("start", 0.0, _("Starting the report worker"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (libraryRoot(), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env["HF_HUB_OFFLINE"] = "1"  # the worker loads weights from local folders only
        folder = pathlib.Path(self._workFolder())
        from BrainGemma3DLib.slicer.engine_client import EngineProcess

        self._engine = EngineProcess(
            [pythonExecutable(), "-m", "BrainGemma3DLib.engine"],
            env=env,
            cwd=str(folder),
            log_path=folder / "engine.log",
        )
        self._timer.start()

    def _request(self, payload):
        self._requestCount += 1
        return {"id": f"bg3d-{self._requestCount}", **payload}

    def _send(self, request):
        try:
            self._engine.send(request)
        except (OSError, ValueError, AttributeError):
            logging.warning("BrainGemma3D: the worker did not take request %s", request.get("cmd"))

    def _killIfStillRunning(self, job):
        if self._job is job and self._engine is not None:
            logging.warning(
                "BrainGemma3D: the worker did not stop within %s s; killing it", CANCEL_GRACE_SECONDS
            )
            self._engine.kill()  # the reader sees end-of-file; _poll finishes the job as cancelled

    def _poll(self):
        """Main thread, every POLL_INTERVAL_MS: hand the worker's events to the job's callbacks."""
        if self._engine is None:
            self._timer.stop()
            return
        for event in self._engine.events():
            if event is None:
                self._onEngineEnded()
                return
            self._dispatch(event)

    def _dispatch(self, event):
        from BrainGemma3DLib.slicer.engine_client import EngineError

        kind, job = event.get("event"), self._job
        if kind == "ready":
            logging.info("BrainGemma3D worker %s ready", event.get("version"))
            return
        if job is None or event.get("id") != job.current_id:
            if kind == "error":
                logging.warning("BrainGemma3D worker: %s", event.get("message"))
            return
        if kind == "progress":
            job.on_progress(
                str(event.get("stage", "")), float(event.get("fraction") or 0.0), event.get("message", "")
            )
        elif kind == "result":
            if event.get("cmd") == "load":
                info = dict(self.deviceInfo or {})
                info["device"] = event.get("device")
                if "cuda_available" in event:
                    info["cuda_available"] = bool(event["cuda_available"])
                self.deviceInfo = info
            job.index += 1
            if job.index == len(job.requests):  # finished before a cancel could stop it: keep the report
                self._finish(event, None)
            elif job.cancel_requested:
                self._finish(None, EngineError(_("Cancelled; nothing was written."), cancelled=True))
            else:
                self._send(job.requests[job.index])
        elif kind == "error":
            message = event.get("message") or _("unknown error")
            if event.get("out_of_memory"):
                message += "\n" + _("Choose the CPU as device, or close other programs that use the GPU.")
            error = EngineError(
                message,
                cancelled=bool(event.get("cancelled")),
                out_of_memory=bool(event.get("out_of_memory")),
                debug=event.get("debug"),
            )
            self._finish(None, error)

    def _onEngineEnded(self):
        """The worker's stdout closed: it exited or crashed. A running job fails; the next run restarts it."""
        from BrainGemma3DLib.slicer.engine_client import EngineError

        engine, self._engine = self._engine, None
        self._timer.stop()
        code, tail = engine.return_code(), engine.log_tail()
        engine.close()
        if self._job is None:
            return
        if self._job.cancel_requested:
            self._finish(None, EngineError(_("Cancelled; the worker was stopped."), cancelled=True))
            return
        outOfMemory = "out of memory" in tail.lower()
        message = _(
            "The report worker stopped unexpectedly (exit code {code}); it restarts on the next Generate."
        ).format(code=code)
        if outOfMemory:
            message += "\n" + _("It ran out of memory: choose the CPU as device, or close other programs.")
        self._finish(None, EngineError(message, out_of_memory=outOfMemory, debug=tail))

    def _finish(self, result, error):
        job, self._job = self._job, None
        if job is not None and job.on_finished is not None:
            job.on_finished(result, error)
