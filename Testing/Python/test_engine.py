"""The engine as the Slicer panel uses it: a real ``python -m BrainGemma3DLib.engine`` process with the demo
weights, driven over JSON lines on stdin/stdout."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest
from helpers import REPO
from helpers import SAMPLE as SAMPLE_PATH

SAMPLE = str(SAMPLE_PATH)


def _not_json(name: str):
    raise AssertionError(f"the engine wrote {name}, which is not standard JSON")


class Worker:
    """The engine process with a reader thread, as the panel runs it (never blocking on a read)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "BrainGemma3DLib.engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line, parse_constant=_not_json))  # every line: standard JSON
        self.events.put(None)

    def send(self, raw: str | dict) -> None:
        self.proc.stdin.write((raw if isinstance(raw, str) else json.dumps(raw)) + "\n")
        self.proc.stdin.flush()

    def until(self, request_id, timeout: float = 120.0) -> list[dict]:
        """Events of one request up to its result or error."""
        got, deadline = [], time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert event is not None, f"engine exited early: {got}"
            if event.get("id") == request_id:
                got.append(event)
                if event["event"] in ("result", "error"):
                    return got


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    ready = w.events.get(timeout=60)
    assert ready["event"] == "ready" and ready["version"]
    yield w
    if w.proc.poll() is None:
        w.proc.kill()


def test_load_once_and_keep_the_model(worker):
    worker.send({"id": "load-1", "cmd": "load", "model": "demo", "device": "cpu"})
    first = worker.until("load-1")[-1]
    assert first["event"] == "result" and first["reused"] is False and len(first["checkpoint_sha256"]) == 64
    worker.send({"id": "load-2", "cmd": "load", "model": "demo", "device": "cpu"})
    assert worker.until("load-2")[-1]["reused"] is True


def test_report_with_named_progress_stages(worker, tmp_path):
    worker.send({"id": "load", "cmd": "load", "model": "demo", "device": "cpu"})
    worker.until("load")
    out = tmp_path / "case"
    options = {"n_samples": 30, "n_segments": 16, "batch_size": 8}
    worker.send(
        {
            "id": "r1",
            "cmd": "report",
            "inputs": [SAMPLE],
            "out": str(out),
            "explain": True,
            "options": options,
        }
    )
    events = worker.until("r1", timeout=300)
    result = events[-1]
    assert result["event"] == "result", result
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert {"read", "generate", "explain", "pdf", "write"} <= set(stages)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert result["report"]["status"] == "draft" and result["report"]["text"]
    for key in ("json", "text", "pdf", "attribution", "segmentation"):
        assert (out / result["files"][key].split("/")[-1]).is_file()


def test_malformed_and_unknown_requests_keep_the_engine_alive(worker, tmp_path):
    worker.send("this is not json")
    bad = worker.until(None)[-1]
    assert bad["event"] == "error" and "malformed" in bad["message"]
    worker.send({"id": "u", "cmd": "dance"})
    unknown = worker.until("u")[-1]
    assert unknown["event"] == "error" and "unknown request" in unknown["message"]
    # A model is loaded (whichever tests ran before on this worker), so the bad input is what fails.
    worker.send({"id": "loaded", "cmd": "load", "model": "demo", "device": "cpu"})
    assert worker.until("loaded")[-1]["event"] == "result"
    worker.send(
        {
            "id": "bad-input",
            "cmd": "report",
            "inputs": ["/nonexistent/flair.nii.gz"],
            "out": str(tmp_path / "x"),
        }
    )
    failed = worker.until("bad-input")[-1]
    assert failed["event"] == "error" and "flair.nii.gz" in failed["message"] and "debug" not in failed
    worker.send({"id": "alive", "cmd": "load", "model": "demo", "device": "cpu"})
    assert worker.until("alive")[-1]["event"] == "result"


def test_hostile_requests_get_one_clear_error_and_the_engine_keeps_running(worker, tmp_path):
    worker.send("[" * 1000 + "]" * 1000)  # nested deeper than any parser should follow
    deep = worker.until(None)[-1]
    assert deep["event"] == "error" and "nested too deeply" in deep["message"]
    worker.send('{"id": NaN, "cmd": "load"}')
    assert "NaN is not a JSON number" in worker.until(None)[-1]["message"]
    worker.send('{"id": Infinity, "cmd": "load"}')
    assert "Infinity" in worker.until(None)[-1]["message"]
    worker.send({"id": [1], "cmd": "load"})
    assert "'id' must be a string or an integer" in worker.until(None)[-1]["message"]
    worker.send({"id": "load", "cmd": "load", "model": "demo", "device": "cpu"})
    worker.until("load")
    base = {"cmd": "explain", "inputs": [SAMPLE], "out": str(tmp_path / "e"), "text": "Left frontal mass."}
    for rid, extra, expected in (
        ("many", {"options": {"n_samples": "many"}}, "option 'n_samples' must be int (got 'many')"),
        ("flag", {"options": {"top_k": True}}, "option 'top_k' must be int"),
        ("huge", {"options": {"n_samples": 10**12}}, "n_samples must be between 10 and 100000"),
        ("span", {"span": [5, "x"]}, "'span' must be [start, end]"),
        ("over", {"overwrite": "yes"}, "'overwrite' must be true or false"),
    ):
        worker.send({"id": rid, **base, **extra})
        event = worker.until(rid)[-1]
        assert event["event"] == "error" and expected in event["message"], event
        assert "debug" not in event, event  # a bad request is not an internal error
    worker.send({"id": "bad-decoding", "cmd": "report", "inputs": [SAMPLE], "out": str(tmp_path / "r"),
                 "decoding": {"temperature": "hot"}})  # fmt: skip
    assert "must be float" in worker.until("bad-decoding")[-1]["message"]
    worker.send({"id": "nothing", "cmd": "cancel", "job": "ghost"})
    assert "no running job 'ghost'" in worker.until("nothing")[-1]["message"]
    worker.send({"id": "alive", "cmd": "load", "model": "demo", "device": "cpu"})
    assert worker.until("alive")[-1]["event"] == "result"
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_cancel_stops_a_running_explanation_quickly_and_writes_nothing(worker, tmp_path):
    worker.send({"id": "load", "cmd": "load", "model": "demo", "device": "cpu"})
    worker.until("load")
    out = tmp_path / "cancelled"
    text = "The lesion is in the right parietal lobe."
    slow = {"n_samples": 5000, "batch_size": 4}
    worker.send(
        {"id": "x", "cmd": "explain", "inputs": [SAMPLE], "out": str(out), "text": text, "options": slow}
    )
    while True:  # wait until the explanation is running
        event = worker.events.get(timeout=120)
        if event.get("id") == "x" and event.get("stage") == "explain" and event["fraction"] > 0.35:
            break
    worker.send({"id": "busy", "cmd": "report", "inputs": [SAMPLE], "out": str(tmp_path / "other")})
    assert "busy" in worker.until("busy")[-1]["message"]
    started = time.monotonic()
    worker.send({"id": "c0", "cmd": "cancel", "job": "not-this-one"})  # another id cancels nothing
    assert "no running job 'not-this-one'" in worker.until("c0")[-1]["message"]
    worker.send({"id": "c", "cmd": "cancel", "job": "x"})
    ended = worker.until("x", timeout=30)[-1]
    assert ended["event"] == "error" and ended["cancelled"] is True
    assert time.monotonic() - started < 5.0
    assert not out.exists() or not any(out.iterdir())


def test_explain_one_statement(worker, tmp_path):
    worker.send({"id": "load", "cmd": "load", "model": "demo", "device": "cpu"})
    worker.until("load")
    text = "The lesion is in the right parietal lobe. There is surrounding edema."
    span = [text.index("edema"), text.index("edema") + 5]
    options = {"n_samples": 30, "n_segments": 16, "batch_size": 8}
    worker.send(
        {
            "id": "e",
            "cmd": "explain",
            "inputs": [SAMPLE],
            "out": str(tmp_path),
            "text": text,
            "span": span,
            "options": options,
        }
    )
    result = worker.until("e", timeout=300)[-1]
    assert result["event"] == "result", result
    assert result["explanation"]["span"] == span and (tmp_path / "attribution.seg.nrrd").is_file()


def test_out_of_memory_is_reported_as_such():
    import torch

    from BrainGemma3DLib.app.engine import describe_error

    described = describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert described["out_of_memory"] is True and "ran out of memory" in described["message"]


def test_closed_stdin_ends_the_engine():
    w = Worker()
    assert w.events.get(timeout=60)["event"] == "ready"
    w.proc.stdin.close()
    assert w.proc.wait(timeout=30) == 0


def test_shutdown_request(worker):
    worker.send({"id": "bye", "cmd": "shutdown"})
    assert worker.until("bye")[-1]["event"] == "result"
    assert worker.proc.wait(timeout=30) == 0
