"""The panel's worker client (BrainGemma3DLib.slicer.engine_client), driven against the real worker without
Slicer: the same polling the module's QTimer does, one Generate's requests in order, a crash ends it."""

from __future__ import annotations

import os
import sys
import time

import pytest
from helpers import REPO
from helpers import SAMPLE as SAMPLE_PATH

SAMPLE = str(SAMPLE_PATH)


def _poll(engine, until, timeout=300.0):
    """Drain events as the panel's timer does, until ``until(events)`` or the worker ends."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = engine.events()
        seen += batch
        if None in batch or until(seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"timed out; saw {seen[-3:]}")


@pytest.mark.slow
def test_a_generate_runs_its_requests_in_order_and_a_crash_ends_the_stream(tmp_path):
    from BrainGemma3DLib.slicer.engine_client import EngineProcess, Job

    env = dict(os.environ, PYTHONPATH=str(REPO))
    engine = EngineProcess(
        [sys.executable, "-m", "BrainGemma3DLib.engine"],
        env=env,
        cwd=str(tmp_path),
        log_path=tmp_path / "log",
    )
    try:
        assert _poll(engine, lambda ev: any(e and e["event"] == "ready" for e in ev))
        progress, finished = [], []
        job = Job(
            [
                {"id": "1", "cmd": "load", "model": "demo", "device": "cpu"},
                {
                    "id": "2",
                    "cmd": "report",
                    "inputs": [SAMPLE],
                    "out": str(tmp_path / "case"),
                    "explain": False,
                },
            ],
            lambda *a: progress.append(a),
            lambda result, error: finished.append((result, error)),
        )
        for step in range(2):
            assert job.current_id == str(step + 1)
            engine.send(job.requests[job.index])
            events = _poll(
                engine,
                lambda ev, rid=job.current_id: any(
                    e and e["id"] == rid and e["event"] == "result" for e in ev
                ),
            )
            assert events[-1]["event"] == "result", events[-1]
            job.index += 1
        assert (tmp_path / "case" / "report.pdf").is_file()
        assert engine.running()
        engine.kill()  # a crash: the stream ends with None and the log is readable
        assert None in _poll(engine, lambda ev: None in ev)
        assert not engine.running() and isinstance(engine.log_tail(), str)
    finally:
        engine.close()


def test_engine_error_carries_the_panels_flags():
    from BrainGemma3DLib.slicer.engine_client import EngineError

    error = EngineError("GPU ran out of memory", out_of_memory=True, debug="trace")
    assert str(error) == "GPU ran out of memory" and error.out_of_memory and not error.cancelled


#: A launcher like Slicer's PythonSlicer: it starts the real Python process as its child, sharing the pipes,
#: and waits for it.
LAUNCHER = (
    "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'BrainGemma3DLib.engine']))"
)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_stopping_reaches_the_real_worker_behind_a_launcher(tmp_path, how):
    """Cancel's last resort and Clear cache kill, closing Slicer stops: either way no process is left."""
    from BrainGemma3DLib.slicer.engine_client import EngineProcess

    env = dict(os.environ, PYTHONPATH=str(REPO))
    engine = EngineProcess(
        [sys.executable, "-c", LAUNCHER], env=env, cwd=str(tmp_path), log_path=tmp_path / "log"
    )
    try:
        ready = next(e for e in _poll(engine, lambda ev: any(e and e["event"] == "ready" for e in ev)) if e)
        worker = int(ready["pid"])
        assert worker != engine.process.pid and _alive(worker)  # the model would live in the child
        if how == "kill":
            engine.kill()
        else:
            engine.stop(timeout=10)
        assert not _alive(worker) and not _alive(engine.process.pid)
    finally:
        engine.close()
