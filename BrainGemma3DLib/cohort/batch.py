"""``braingemma3d batch``: drafts for a whole cohort, resumable, on one process or sharded by accelerate.

Layout of ``--out``::

    OUT/<case id>/          the same files ``report`` writes (all or nothing per case)
    OUT/_batch/<case id>.json  what happened to the case: done (with its stamp) or failed (with the one line)
    OUT/cohort.csv, cohort.parquet, summary.md   the table of every case, rebuilt after each run

Why a record per case and not one state file: several processes (``accelerate launch``) write at once, and a
run killed at any moment must lose nothing. A case counts as done only once its record is written, after its
report folder was swapped in whole; its stamp is the SHA-256 of the input files, of the checkpoint and of the
options that change a draft, so a re-run skips exactly the cases whose report would come out the same and
redoes the rest (failed, interrupted, changed input, other weights or options).

Sharding: under ``accelerate launch`` each process takes every N-th case (by id), loads the model once and
writes its own cases; no process waits for another (a cohort can take hours, longer than a collective's
timeout), and the table is rebuilt under a file lock by each process as it ends, so the last one to end
writes the complete table. Inside a process, ``--batch-size`` cases are drafted in one pass
(:func:`~BrainGemma3DLib.reporting.consensus.decode_many`): the same drafts as one at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..explain import ExplainOptions
from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..io.stamps import sha256_files
from ..reporting.consensus import DecodingOptions, decode_many
from ..reporting.report import Report
from .inputs import CohortCase, find_cases
from .table import write_table

RECORDS = "_batch"


@dataclass
class BatchOptions:
    """What ``batch`` drafts and how (the ``report`` options, plus the batch size)."""

    source: str | os.PathLike
    out: str | os.PathLike
    model: str = "demo"
    device: str = "auto"
    quantize: str | None = None
    grid: tuple[int, int, int] | None = None
    explain: bool = False
    explain_options: ExplainOptions = field(default_factory=ExplainOptions)
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    max_new_tokens: int | None = None
    batch_size: int = 1
    progress: bool = True

    def check(self) -> None:
        if not 1 <= self.batch_size <= 64:
            raise InputError(f"--batch-size must be 1 to 64 (got {self.batch_size})")
        self.decoding.check()
        if self.explain:
            self.explain_options.check()

    def stamped(self) -> dict:
        """The options that change a draft (so a change redoes the cases): never the batch size or sharding,
        which give the same drafts."""
        stamped = {
            "grid": list(self.grid) if self.grid else None,
            "quantize": self.quantize,
            "decoding": vars(self.decoding),
            "max_new_tokens": self.max_new_tokens,
            "explain": vars(self.explain_options) if self.explain else None,
        }
        return json.loads(json.dumps(stamped, default=str))


def input_digest(paths: list[str]) -> str:
    """SHA-256 of a case's input files (a DICOM folder: its files in name order)."""
    files: list[Path] = []
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise InputError("file not found", p)
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return sha256_files(files)


def case_stamp(case: CohortCase, checkpoint_sha256: str, options: dict) -> dict:
    """What a case's draft depends on: its inputs (and segmentation), the weights, the options."""
    inputs = input_digest(case.inputs)
    seg = input_digest([case.seg]) if case.seg else None
    key = json.dumps([inputs, seg, checkpoint_sha256, options], sort_keys=True)
    return {
        "input_sha256": inputs,
        "seg_sha256": seg,
        "checkpoint_sha256": checkpoint_sha256,
        "options_sha256": hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest(),
        "key": hashlib.sha256(key.encode()).hexdigest(),
    }


def read_record(out: Path, case_id: str) -> dict | None:
    path = out / RECORDS / f"{case_id}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or unreadable (a killed write never leaves one: writes are atomic)


def _write_record(out: Path, record: dict) -> None:
    write_text_atomic(out / RECORDS / f"{record['case_id']}.json", json.dumps(record, indent=1) + "\n")


class _StopAfterCurrent:
    """First Ctrl-C: finish the case(s) being drafted, then stop; a second one stops at once."""

    def __init__(self, say) -> None:
        self.requested = False
        self._say = say
        self._previous = None

    def __enter__(self):
        if _on_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("stopping after the current case(s); Ctrl-C again to stop now (nothing half-written stays)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _on_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _shard() -> tuple[int, int]:
    """(this process's index, the number of processes): from ``accelerate launch``, else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if torch.cuda.is_available():  # one GPU per process: "cuda" then means this process's own
        torch.cuda.set_device(state.local_process_index % torch.cuda.device_count())
    return state.process_index, state.num_processes


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    with open(out / RECORDS / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_batch(opts: BatchOptions) -> dict:
    """Draft every case of ``opts.source`` not already done into ``opts.out``; returns the counts.

    Raises :class:`InputError` for an unusable cohort or output folder (before any case); a case that fails
    is recorded and the others go on.
    """
    from tqdm import tqdm

    from ..model import load

    opts.check()
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / RECORDS).is_dir():
        raise InputError("output folder holds files that are not a batch's: choose a new one", out)
    rank, world = _shard()
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if opts.progress else (lambda m: None)
    started = time.perf_counter()
    extra = {"quantize": opts.quantize} if opts.quantize else {}
    model = load(opts.model, device=opts.device, grid=opts.grid, **extra)
    cases = find_cases(opts.source, model.cfg.in_channels)
    try:
        (out / RECORDS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})", out) from None
    mine = cases[rank::world]
    options = opts.stamped()
    todo, skipped = [], 0
    for case in mine:
        record = read_record(out, case.case_id)
        if case.problem:
            _write_record(out, {"case_id": case.case_id, "status": "failed", "error": case.problem})
            continue
        try:
            stamp = case_stamp(case, model.checkpoint_sha256, options)
        except InputError as exc:
            _write_record(out, _failure(case, None, exc))
            continue
        except OSError as exc:
            _write_record(out, _failure(case, None, InputError(f"unreadable input ({exc.strerror})")))
            continue
        same = record and record.get("status") == "done" and (record.get("stamp") or {}).get("key")
        if same == stamp["key"] and (out / case.case_id / "report.json").is_file():
            skipped += 1
        else:
            todo.append((case, stamp))
    shard = f" (process {rank + 1} of {world})" if world > 1 else ""
    say(f"{len(cases)} case(s){shard}: {len(mine)} here, {skipped} already done, {len(todo)} to draft")
    counts = {"drafted": 0, "failed": 0, "skipped": skipped, "interrupted": False, "processes": world}
    bar = tqdm(
        total=len(mine), initial=len(mine) - len(todo), unit="case", disable=not opts.progress,
        file=sys.stderr, position=rank, desc=f"batch{shard}", dynamic_ncols=True,
    )  # fmt: skip
    try:
        with _StopAfterCurrent(say) as stop, bar:
            for start in range(0, len(todo), opts.batch_size):
                if stop.requested:
                    counts["interrupted"] = True
                    break
                group = todo[start : start + opts.batch_size]
                for record in _draft_group(model, group, out, opts):
                    _write_record(out, record)
                    counts["drafted" if record["status"] == "done" else "failed"] += 1
                    bar.update(1)
    finally:  # also after a second Ctrl-C: the table shows what is done
        with _locked(out):
            table = write_table(out, cases, {c.case_id: read_record(out, c.case_id) for c in cases})
    counts.update(table["counts"], seconds=round(time.perf_counter() - started, 1))
    counts["cases"] = len(cases)
    return counts


def _failure(case: CohortCase, stamp: dict | None, exc: BaseException) -> dict:
    line = str(exc) if isinstance(exc, InputError) else f"internal error: {type(exc).__name__}: {exc}"
    return {"case_id": case.case_id, "status": "failed", "error": line.splitlines()[0], "stamp": stamp}


def _draft_group(model, group: list[tuple[CohortCase, dict]], out: Path, opts: BatchOptions) -> list[dict]:
    """Draft a group of cases in one pass and finish each (PDF, files); a case that fails fails alone."""
    from ..app.pipeline import ReportRequest, finish_report, prepare_report

    records: dict[str, dict] = {}
    prepared = []
    for case, stamp in group:
        t = time.perf_counter()
        request = ReportRequest(
            inputs=case.inputs,
            out=out / case.case_id,
            model=opts.model,
            explain=opts.explain,
            explain_options=opts.explain_options,
            decoding=opts.decoding,
            max_new_tokens=opts.max_new_tokens,
            overwrite=True,  # a previous, stale or killed, report set of this case is replaced whole
            quantize=opts.quantize,
            grid=opts.grid,
            seg=case.seg,
        )
        try:
            prepared.append((case, stamp, prepare_report(request, model), time.perf_counter() - t))
        except Exception as exc:  # noqa: BLE001 - recorded with its one line; the cohort goes on
            records[case.case_id] = _failure(case, stamp, exc)
    if prepared:
        t = time.perf_counter()
        try:
            grids = [ready.grid for _c, _s, ready, _t in prepared]
            drafts = decode_many(model, grids, opts.decoding, max_new_tokens=opts.max_new_tokens)
        except Exception:  # noqa: BLE001 - one bad case must not fail its batch: draft them one by one
            drafts = [None] * len(prepared)
        draft_s = (time.perf_counter() - t) / len(prepared)
        for (case, stamp, ready, read_s), draft in zip(prepared, drafts, strict=True):
            t = time.perf_counter()
            try:
                if draft is None:
                    most = opts.max_new_tokens
                    draft = decode_many(model, [ready.grid], opts.decoding, max_new_tokens=most)[0]
                ready.timings["generate_s"] = draft_s
                result = finish_report(ready, model, draft)
            except Exception as exc:  # noqa: BLE001
                records[case.case_id] = _failure(case, stamp, exc)
                continue
            records[case.case_id] = {
                "case_id": case.case_id,
                "status": "done",
                "stamp": stamp,
                "inputs": case.inputs,
                "seg": case.seg,
                "seconds": round(read_s + draft_s + time.perf_counter() - t, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "row": _row(result["report"]),
            }
    return [records[case.case_id] for case, _stamp in group]


def _row(report: Report) -> dict:
    """What the cohort table shows of a report value (report.json keeps everything)."""
    entities = report.entities
    agreement = (report.decoding or {}).get("agreement") or {}
    timings = report.timings
    check = report.input_check or {}
    return {
        "lesion": {True: "yes", False: "no"}.get(entities.get("lesion"), "unstated"),
        "side": entities.get("laterality") or "",
        "lobes": ";".join(entities.get("lobes") or []),
        "findings": ";".join(k for k, v in (entities.get("findings") or {}).items() if v),
        "warnings": report.warning_texts,
        "input_check": "ok" if check.get("ok", True) else "outside",
        "agreement_min": min(agreement.values()) if agreement else None,
        "agreement_lesion": agreement.get("lesion"),
        "agreement_side": agreement.get("laterality"),
        "generate_s": timings.get("generate_s"),
        "explain_s": timings.get("explain_s"),
    }
