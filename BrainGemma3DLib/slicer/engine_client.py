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
import signal
import subprocess
import threading
import time


def _group(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (OSError, AttributeError):
        return None


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

    Stopping stops the whole process tree: in Slicer ``PythonSlicer`` is a launcher whose child is the real
    Python process holding the model (and its GPU memory); killing the launcher alone would leave that child
    running, and the next Generate would load a second copy. On POSIX the worker starts in a session of its
    own and the whole group is signalled; elsewhere the tree is walked with ``psutil``.
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
            start_new_session=os.name == "posix",  # its own process group: stopping reaches every child
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

    def kill(self, grace: float = 2.0):
        """Stop the worker and every process it started: terminate, wait up to ``grace`` s, then kill."""
        for sig in (signal.SIGTERM, signal.SIGKILL if os.name == "posix" else signal.SIGTERM):
            alive = self._tree()
            if not alive:
                break
            self._signal(alive, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._tree():
                time.sleep(0.05)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _tree(self) -> list:
        """The worker and its descendants that are still alive (zombies do not count)."""
        try:
            import psutil
        except ImportError:
            return [self.process.pid] if self.running() else []
        try:
            root = psutil.Process(self.process.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            members = []
        if os.name == "posix":  # children re-parented away from the launcher still share its group
            members += [p for p in psutil.process_iter() if _group(p) == self.process.pid]
        alive = {}
        for member in members:
            try:
                if member.status() != psutil.STATUS_ZOMBIE:
                    alive[member.pid] = member
            except psutil.NoSuchProcess:
                continue
        return list(alive.values())

    def _signal(self, members, sig) -> None:
        if os.name == "posix":
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for member in members:
            try:
                member.send_signal(sig) if hasattr(member, "send_signal") else os.kill(member, sig)
            except Exception:  # gone meanwhile
                pass

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
