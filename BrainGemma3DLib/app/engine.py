"""The worker process the Slicer module talks to: ``python -m BrainGemma3DLib.engine``.

Why a separate, long-lived process: loading a model takes seconds to minutes and must happen once, not per
case; generation and explanation take seconds to minutes and must never freeze Slicer's GUI; and a crash
or a CUDA out-of-memory in PyTorch must never take Slicer (and the radiologist's unsaved scene) down.

Protocol: JSON lines. The engine first prints ``{"event": "ready", "version": ...}``. Each request is one
JSON object per line on stdin with an ``id`` and a ``cmd``:

- ``load`` {model: "demo" | folder, device: auto|cpu|cuda, vision, lm, quantize, grid: [D, H, W]}:
  load (or keep) the model; ``vision`` and ``lm`` are local MedSigLIP/MedGemma folders when the checkpoint
  does not record them; ``quantize`` is the language model's precision (none, bf16, int8 on a CPU, nf4 or
  4bit on CUDA: ``model.precision``); ``grid`` is a published checkpoint's grid;
- ``report`` {inputs: [paths], out: folder, explain: bool, options: {...}, decoding: {...}, fields: {...},
  overwrite: bool, seg: path}: the whole report (:func:`BrainGemma3DLib.app.pipeline.run_report`;
  ``decoding``: samples, temperature, seed; ``out`` new or empty unless ``overwrite`` replaces a previous
  report there, as the CLI; ``seg``: a tumour segmentation, as ``report --seg``);
- ``explain`` {inputs, out, text, span: [start, end] | null, options}: explain a (possibly edited) text or
  one statement in it; writes the attribution files into ``out``;
- ``cancel`` {job: the id of the request to stop}: stop that job (between stages or explanation batches:
  within a few seconds; nothing of it is written); a ``job`` that is not the running one cancels nothing;
- ``shutdown``: cancel what runs and exit. A closed stdin means the same.

Each event is one JSON object per line on stdout with the request's ``id`` and an ``event``: ``progress``
{stage, fraction, message}, ``result`` {...}, ``error`` {message, and ``debug`` with the traceback only
when something unexpected happened; ``cancelled`` / ``out_of_memory`` flags}. stdout carries nothing else:
whatever a library prints goes to stderr, and every line is standard JSON (no NaN or Infinity).

Requests are checked before anything runs (types, known names, ranges): a bad one gets an error event with
one clear message, never a traceback, and the engine keeps running.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from dataclasses import fields
from pathlib import Path
from typing import IO

from .. import __version__
from ..explain import Cancelled, ExplainOptions
from ..io.errors import InputError
from ..reporting.consensus import DecodingOptions

JOB_COMMANDS = ("load", "report", "explain")
#: A request line longer than this is refused unread (a report request is a few hundred bytes).
MAX_LINE = 1 << 20


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def describe_error(exc: BaseException) -> dict:
    """One clear message for an exception, with flags the panel acts on (cancelled, out of memory)."""

    if isinstance(exc, Cancelled):
        return {"message": "cancelled; nothing was written", "cancelled": True}
    if isinstance(exc, InputError):
        return {"message": str(exc)}
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return {
            "message": "the GPU ran out of memory (CUDA out of memory): choose the CPU, close other GPU "
            "programs, or use a smaller explanation batch",
            "out_of_memory": True,
            "debug": text,
        }
    return {
        "message": f"internal error: {type(exc).__name__}: {text}",
        "debug": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class Engine:
    """Reads requests, runs one job at a time on a worker thread, writes events (see module docstring)."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.lock = threading.Lock()
        self.model = None
        self.model_key: tuple | None = None  # (model, device, base folders) of the loaded model
        self.job: threading.Thread | None = None
        self.job_id = None
        self.running = False  # a job is under way (cleared just before its result or error is sent)
        self.cancel_event = threading.Event()

    # --- output ---------------------------------------------------------------------------------------
    def emit(self, event: str, request_id=None, **fields) -> None:
        line = json.dumps({"id": request_id, "event": event, **fields}, default=str, allow_nan=False)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    # --- requests -------------------------------------------------------------------------------------
    def handle_line(self, line: str) -> bool:
        """Handle one request line; returns False when the engine should stop."""
        line = line.strip()
        if not line:
            return True
        if len(line) > MAX_LINE:
            self.emit(
                "error", None, message=f"malformed request: a line of {len(line)} characters is too long"
            )
            return True
        try:
            request = json.loads(line, parse_constant=_no_constants)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except RecursionError:
            self.emit("error", None, message="malformed request: nested too deeply")
            return True
        except ValueError as exc:
            self.emit("error", None, message=f"malformed request (not a JSON object): {exc}")
            return True
        rid, cmd = request.get("id"), request.get("cmd")
        if not (rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))):
            self.emit("error", None, message="malformed request: 'id' must be a string or an integer")
            return True
        if cmd == "shutdown":
            self.shutdown()
            self.emit("result", rid, cmd="shutdown")
            return False
        if cmd == "cancel":
            self._cancel(rid, request.get("job"))
            return True
        if cmd not in JOB_COMMANDS:
            known = ", ".join((*JOB_COMMANDS, "cancel", "shutdown"))
            self.emit("error", rid, message=f"unknown request {cmd!r} (known: {known})")
            return True
        if self.running:
            self.emit("error", rid, message=f"busy with request {self.job_id!r}: cancel it or wait")
            return True
        self.cancel_event.clear()
        self.job_id = rid
        self.running = True
        self.job = threading.Thread(target=self._run, args=(rid, cmd, request), daemon=True)
        self.job.start()
        return True

    def _cancel(self, rid, job) -> None:
        """Cancel the job whose id is ``job``; any other id (or none) leaves the running job alone."""
        if job is None:
            self.emit(
                "error", rid, cmd="cancel", message="a cancel request names the job to stop ('job': its id)"
            )
        elif self.running and job == self.job_id:
            self.cancel_event.set()
            self.emit("result", rid, cmd="cancel", cancelled=job)
        else:
            running = f"running: {self.job_id!r}" if self.running else "nothing is running"
            self.emit("error", rid, cmd="cancel", message=f"no running job {job!r} to cancel ({running})")

    def shutdown(self, timeout: float = 30.0) -> None:
        self.cancel_event.set()
        if self.job is not None:
            self.job.join(timeout)

    # --- jobs -----------------------------------------------------------------------------------------
    def _run(self, rid, cmd: str, request: dict) -> None:
        try:
            event, fields = "result", getattr(self, f"_{cmd}")(rid, request)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes one error event
            event, fields = "error", describe_error(exc)
        self.running = False  # before the last event: a client may send the next request at once
        try:
            self.emit(event, rid, cmd=cmd, **fields)
        except ValueError as exc:  # a result that is not standard JSON must still be answered, as an error
            self.emit(
                "error", rid, cmd=cmd, message=f"internal error: the result is not standard JSON ({exc})"
            )

    def _progress(self, rid):
        def progress(stage: str, fraction: float, message: str) -> None:
            self.emit("progress", rid, stage=stage, fraction=round(float(fraction), 4), message=message)

        return progress

    def _load(self, rid, request: dict) -> dict:
        from ..model import load, pick_device

        ref = _text(request, "model", "demo")
        device = _text(request, "device", "auto")
        bases = {k: _text(request, k, "") for k in ("vision", "lm") if request.get(k)}  # MedSigLIP/MedGemma
        quantize = _text(request, "quantize", "") or None
        if quantize not in (None, "none", "bf16", "int8", "nf4", "4bit"):
            raise InputError("'quantize' must be one of none, bf16, int8, nf4 (4bit), or absent")
        grid = _grid(request)
        extra = {"quantize": quantize} if quantize else {}
        if grid is not None:
            extra["grid"] = grid
        key = (ref, str(pick_device(device)), tuple(sorted(bases.items())), quantize, grid)
        if self.model is not None and self.model_key == key:
            return {"model": ref, "device": key[1], "reused": True}
        self._progress(rid)("load", 0.0, f"loading {ref} on {key[1]}")
        self.model, self.model_key = None, None
        self.model = load(ref, device=device, **bases, **extra)
        self.model_key = key
        return {
            "model": ref,
            "device": key[1],
            "reused": False,
            "preset": self.model.cfg.preset,
            "grid": list(self.model.cfg.grid),
            "checkpoint_sha256": self.model.checkpoint_sha256,
            "cuda_available": _cuda_available(),
        }

    def _loaded(self):
        if self.model is None:
            raise InputError("no model loaded: send a load request first")
        return self.model

    def _report(self, rid, request: dict) -> dict:
        from .pipeline import ReportRequest, run_report

        model = self._loaded()
        report_request = ReportRequest(
            inputs=_inputs(request),
            out=_out(request),
            model=self.model_key[0],
            explain=_flag(request, "explain"),
            explain_options=request_explain_options(request),
            decoding=request_decoding_options(request),
            fields=request_fields(request),
            overwrite=_flag(request, "overwrite"),
            seg=_text(request, "seg", "") or None,
            series=_text(request, "series", "") or None,
        )
        done = run_report(
            report_request, model=model, progress=self._progress(rid), cancel=self.cancel_event.is_set
        )
        return done | {"report": done["report"].to_json()}  # the value as report.json states it

    def _explain(self, rid, request: dict) -> dict:
        from .pipeline import run_explain

        text = request.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError("an explain request needs the report text ('text')")
        return run_explain(
            _inputs(request),
            _out(request),
            text,
            span=_span(request, len(text)),
            model=self._loaded(),
            options=request_explain_options(request),
            progress=self._progress(rid),
            cancel=self.cancel_event.is_set,
            overwrite=_flag(request, "overwrite"),
        )


def _inputs(request: dict) -> list[str]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(p, str) for p in inputs):
        raise InputError("'inputs' must be a list of file or folder paths")
    return inputs


def _out(request: dict) -> str:
    out = request.get("out")
    if not isinstance(out, str) or not out:
        raise InputError("'out' must be an output folder path")
    return out


def _text(request: dict, key: str, default: str) -> str:
    value = request.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string")
    return value


def _flag(request: dict, key: str) -> bool:
    value = request.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"'{key}' must be true or false")
    return value


def request_fields(request: dict) -> dict[str, str]:
    """A request's header fields (institution, patient, study; never invented): text values only."""
    given = request.get("fields") or {}
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise InputError("'fields' must be an object of header field names and text values")
    return {str(k): v for k, v in given.items()}


def _grid(request: dict) -> tuple[int, int, int] | None:
    grid = request.get("grid")
    if grid is None:
        return None
    if not (
        isinstance(grid, list) and len(grid) == 3 and all(type(v) is int and 8 <= v <= 512 for v in grid)
    ):
        raise InputError("'grid' must be [D, H, W], each between 8 and 512")
    return tuple(grid)


def _span(request: dict, length: int) -> tuple[int, int] | None:
    span = request.get("span")
    if span is None:
        return None
    ok = isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
    if not ok or not 0 <= span[0] < span[1] <= length:
        raise InputError(f"'span' must be [start, end] character offsets inside the text (0..{length})")
    return span[0], span[1]


def _options(request: dict, key: str, cls, what: str):
    """A request's ``key`` block as ``cls`` (a dataclass of options), checked: unknown names and values of
    the wrong type (a string where a number goes, say) are refused with one line."""

    given = request.get(key) or {}
    if not isinstance(given, dict):
        raise InputError(f"'{key}' must be an object of option names and values")
    defaults = {f.name: f.default for f in fields(cls)}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(f"unknown {what} option(s) {unknown}; known: {sorted(defaults)}")
    for name, value in given.items():
        kind = int if defaults[name] is None else type(defaults[name])  # None: "the model's own", else an int
        fits = (
            isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if kind is not float
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not fits:
            raise InputError(f"{what} option {name!r} must be {kind.__name__} (got {value!r})")
    options = cls(**given)
    options.check()
    return options


def request_explain_options(request: dict):

    return _options(request, "options", ExplainOptions, "explanation")


def request_decoding_options(request: dict):

    return _options(request, "decoding", DecodingOptions, "decoding")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _protocol_stream() -> IO[str]:
    """The real stdout for events; fd 1 (and Python's sys.stdout) then point at stderr, so that nothing a
    library prints (C code included) can corrupt the protocol."""
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def main(argv: list[str] | None = None) -> int:
    engine = Engine(_protocol_stream())
    engine.emit("ready", None, version=__version__, pid=os.getpid(), cwd=str(Path.cwd()))
    for line in sys.stdin:
        if not engine.handle_line(line):
            return 0
    engine.shutdown()  # stdin closed: the panel went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
