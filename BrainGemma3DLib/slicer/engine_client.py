"""The Slicer panel's side of the worker protocol (:mod:`BrainGemma3DLib.engine`): the process, its pipes,
and one Generate's sequence of requests. Pure Python (no Qt): the panel polls :meth:`EngineProcess.events`
from a main-thread timer, and tests drive the real worker with it, without Slicer.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import queue
import subprocess
import threading


class EngineError(RuntimeError):
    """A failed request, as the panel shows it: one clear message, flags to act on, details for the box."""

    def __init__(self, message, *, cancelled=False, out_of_memory=False, debug=None):
        super().__init__(message)
        self.cancelled = cancelled
        self.out_of_memory = out_of_memory
        self.debug = debug


class EngineProcess:
    """The worker process (``python -m BrainGemma3DLib.engine``) and its JSON-lines pipes.

    Why ``subprocess`` with a reader thread and a main-thread ``QTimer`` rather than ``qt.QProcess``: the
    worker's protocol is lines of text on stdin/stdout, which ``subprocess`` gives directly (PythonQt's
    QProcess hands out QByteArray chunks that would need their own line buffering and decoding); a blocked
    read can never freeze the GUI because only the reader thread reads; and it is the pattern Slicer itself
    uses for non-blocking processes (``slicer.util.launchConsoleProcess(blocking=False)``) and that
    SlicerMONAIAuto3DSeg uses for its worker. The thread only moves lines into a ``queue.Queue``: it never
    touches Qt, VTK or the scene; the logic's QTimer drains the queue on the main thread, where every
    callback runs. stderr goes to a log file, so a chatty library can never fill a pipe and stall the worker,
    and the log's tail explains a crash.
    """

    def __init__(self, command, *, env, cwd, log_path):
        self.log_path = pathlib.Path(log_path)
        self._log = open(self.log_path, "w", encoding="utf-8")  # closed in close(), with the process
        flags = subprocess.CREATE_NO_WINDOW if os.name == "nt" else 0  # no console window on Windows
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=cwd,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            creationflags=flags,
        )
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="BrainGemma3D worker reader", daemon=True)
        self._reader.start()

    def _read(self):
        """Reader thread: stdout lines into the queue, then ``None`` when the worker closes its stdout."""
        try:
            for line in self.process.stdout:
                self.lines.put(line)
        except (OSError, ValueError):  # the pipe was closed under us (close()): same as end of file
            pass
        finally:
            self.lines.put(None)

    def send(self, request):
        """Write one request line; a dead worker raises OSError (BrokenPipeError)."""
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def events(self):
        """Everything the worker said since the last call: event dicts, then ``None`` if it has ended."""
        events = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return events
            if line is None:
                events.append(None)
                return events
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                logging.warning("BrainGemma3D worker wrote a non-JSON line: %s", line[:200])

    def running(self):
        return self.process.poll() is None

    def return_code(self):
        try:
            return self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, characters=3000):
        self._log.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]
        except OSError:
            return ""

    def kill(self):
        if self.running():
            self.process.kill()

    def stop(self, timeout=5.0):
        """Ask the worker to shut down (it finishes or cancels its job), then kill it if it does not."""
        if self.running():
            try:
                self.send({"id": "shutdown", "cmd": "shutdown"})
                self.process.stdin.close()
                self.process.wait(timeout=timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()
        self.close()

    def close(self):
        self.kill()
        for stream in (self.process.stdin, self.process.stdout, self._log):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class Job:
    """One Generate: the requests it sends in order (load, then report) and where its events go."""

    def __init__(self, requests, on_progress, on_finished):
        self.requests = requests
        self.index = 0
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.cancel_requested = False

    @property
    def current_id(self):
        return self.requests[self.index]["id"]
