"""Research annotation records and the worklist over a cohort: what a team of readers writes when it annotates
BraTS cases with report text (the TextBraTS way), one case after another, resumable, several readers at once.

An annotation is a research record, not a clinical signature: it says who wrote which final text for which
input files, starting from which AI draft, and nothing more; a signed clinical PDF stays what it is
(:mod:`.curate` tells the two apart). The state lives beside the cohort (``<source>/_annotations``, or a
folder the reader chooses), one folder per reader, so two readers working on copies of the same cohort merge
by copying folders::

    _annotations/<reader>/TextBraTSData/<case>/<case>_flair_text.txt   the final text (TextBraTS layout)
    _annotations/<reader>/records/<case>.json                         the record (below)
    _annotations/adjudicated-by-<name>/...                             adjudications: the same files

A record (``format`` "braingemma3d-annotation", ``version`` 1)::

    kind "research annotation", status "annotated" | "skipped" (then ``reason``), case_id, reader
    ("adjudicated by NAME" for an adjudication, with ``adjudicated_by`` NAME and ``adjudicates``: the readers'
    records it settled, by SHA-256), created (UTC, ISO 8601), inputs [{sequence, path, sha256}], draft {text,
    report_json, report_json_sha256, model} or null, final_text, edited, diff (unified, draft -> final),
    entities {draft, final}, supersedes (the SHA-256 of this reader's previous record of the case, if any)

The entities come from the one report value (:class:`~BrainGemma3DLib.reporting.report.Report`): the draft's
own, and ``draft.with_text(final)``'s; without a draft, those of a report value built from the final text.
Records and texts are written atomically, the record last (it marks the case done); a reader's folder is
written only by that reader, and a record is never written over another reader's.

The worklist (:class:`Worklist`) is what a panel shows: the cases of a BraTS/TextBraTS folder, a ``batch``
output folder or a CSV manifest, each with its inputs, the batch draft when there is one, the draft's model
agreement (the lowest share of the consensus drafts stating the same), its warnings and this reader's status;
ordered by id or least certain first; ``next_case`` is the first case this reader has not done.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..io.stamps import sha256_bytes, sha256_files, utc_iso
from ..reporting.report import Report, build_report, read_report, report_json
from ..reporting.vocabulary import FINDINGS, LOBES
from ..training.data import TEXT_DIR, case_images
from .batch import RECORDS as BATCH_RECORDS
from .batch import input_digest
from .batch import read_record as read_batch_record
from .inputs import SEQUENCES, find_cases, safe_id

FORMAT = "braingemma3d-annotation"
VERSION = 1
#: What curate's manifest calls these records (a signed PDF is a "signed clinical report").
KIND = "research annotation"
#: The state folder's name beside the cohort.
STATE_DIR = "_annotations"
RECORDS_DIR = "records"
#: An adjudication's folder: this prefix and the adjudicator's name (its record's reader is
#: "adjudicated by NAME").
ADJUDICATION_PREFIX = "adjudicated-by-"
ANNOTATED, SKIPPED = "annotated", "skipped"
#: A case's status for the reader who opened the worklist.
TODO, DRAFTED, MINE, OTHERS = "to do", "drafted", "annotated by me", "annotated by others"
STATUSES = (TODO, DRAFTED, MINE, OTHERS, SKIPPED)
#: Worklist orders: by case id, or the drafts the model was least sure of first (cases without one last).
BY_ID, LEAST_CERTAIN = "id", "least certain first"
ORDERS = (BY_ID, LEAST_CERTAIN)
#: The sequences a reader sees, in this order (a segmentation rides along as ``seg``).
VIEWED = ("flair", "t1ce", "t2")
#: The statements compared between texts (as :mod:`.agreement` names them).
STATEMENTS = ("side", "lesion", *(f"lobe:{lobe}" for lobe in LOBES), *FINDINGS)

_READER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_reader(name: str) -> str:
    """A reader's name, usable as their folder's name; :class:`InputError` otherwise."""
    name = str(name or "").strip()
    if not _READER.match(name) or name.lower().startswith("adjudicated"):
        raise InputError(
            f"reader name {name!r}: use 1 to 64 letters, digits and . _ - (it names the reader's folder; "
            "names starting with 'adjudicated' are kept for adjudications)"
        )
    return name


def adjudication_label(by: str) -> str:
    """The reader field of an adjudication by ``by``."""
    return f"adjudicated by {check_reader(by)}"


def folder_of(reader: str) -> str:
    """The folder of a record's reader ("ann" -> "ann", "adjudicated by ann" -> "adjudicated-by-ann")."""
    reader = str(reader or "")
    if reader.startswith("adjudicated by "):
        return ADJUDICATION_PREFIX + check_reader(reader[len("adjudicated by ") :])
    return check_reader(reader)


def statements(entities: dict | None) -> dict[str, object]:
    """The compared statements of a report value's entities: side ("left", "right", "bilateral", "none"),
    lesion, each lobe and each finding (stated present or not)."""
    entities = entities or {}
    lobes, findings = set(entities.get("lobes") or []), entities.get("findings") or {}
    out: dict[str, object] = {
        "side": entities.get("laterality") or "none",
        "lesion": bool(entities.get("lesion")),
    }
    out.update({f"lobe:{lobe}": lobe in lobes for lobe in LOBES})
    out.update({finding: bool(findings.get(finding)) for finding in FINDINGS})
    return out


# --- records on disk ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """One record read from a reader's folder, with the SHA-256 of its file."""

    folder: str
    path: Path
    record: dict
    sha256: str

    @property
    def case_id(self) -> str:
        return str(self.record["case_id"])

    @property
    def reader(self) -> str:
        return str(self.record["reader"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def adjudicated_by(self) -> str | None:
        return self.record.get("adjudicated_by")

    @property
    def final_text(self) -> str:
        return str(self.record.get("final_text") or "")

    @property
    def final_entities(self) -> dict:
        return dict((self.record.get("entities") or {}).get("final") or {})

    @property
    def text_path(self) -> Path:
        """The final text in the TextBraTS layout, beside the records folder."""
        case = self.case_id
        return self.path.parent.parent / TEXT_DIR / case / f"{case}_flair_text.txt"


def annotations_root(path: str | os.PathLike) -> Path:
    """The folder holding readers' folders: ``path`` itself, its ``_annotations``, or the parent of a single
    reader's folder (one with ``records/``)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("annotations folder not found", path)
    if (path / STATE_DIR).is_dir():
        return path / STATE_DIR
    if (path / RECORDS_DIR).is_dir():
        return path.parent
    return path


def read_annotation(path: str | os.PathLike) -> Annotation:
    """One record file, checked: its format, its case (the file's name) and its reader (the folder's)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        record = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError("unreadable annotation record", path) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError("not a BrainGemma3D annotation record", path)
    if not isinstance(record.get("version"), int) or record["version"] > VERSION:
        raise InputError(
            f"annotation record version {record.get('version')!r}; this reads 1 to {VERSION}", path
        )
    folder = path.parent.parent.name
    if record.get("case_id") != path.stem or not safe_id(path.stem):
        raise InputError("the record's case id is not its file's name", path)
    try:
        own = folder_of(record.get("reader")) == folder
    except InputError:
        own = False
    if not own:
        raise InputError(f"the record's reader {record.get('reader')!r} is not its folder's ({folder})", path)
    if record.get("status") not in (ANNOTATED, SKIPPED):
        raise InputError(f"unknown record status {record.get('status')!r}", path)
    if record["status"] == ANNOTATED and not str(record.get("final_text") or "").strip():
        raise InputError("an annotated record without its final text", path)
    return Annotation(folder, path, record, sha256_bytes(data))


def read_annotations(path: str | os.PathLike) -> tuple[list[Annotation], dict[str, str]]:
    """Every record under an annotations folder (see :func:`annotations_root`), by reader folder and case,
    and the files that are not usable records with their one-line reasons."""
    root = annotations_root(path)
    found: list[Annotation] = []
    problems: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if (p / RECORDS_DIR).is_dir()):
        for file in sorted((folder / RECORDS_DIR).glob("*.json")):
            try:
                found.append(read_annotation(file))
            except InputError as exc:
                problems[str(file)] = exc.problem
    return found, problems


# --- the worklist -------------------------------------------------------------------------------------------


@dataclass
class WorkCase:
    """One case of a worklist, as a panel's table row shows it."""

    case_id: str
    #: Input files by sequence (flair, and t1ce / t2 where present), in :data:`VIEWED` order.
    inputs: dict[str, str] = field(default_factory=dict)
    seg: str | None = None
    #: The batch draft's report folder (its report.json), or None.
    draft: str | None = None
    #: The draft's model agreement: the lowest share of the consensus drafts stating the same, or None.
    agreement: float | None = None
    warnings: int = 0
    #: Why the case cannot be annotated (no input recorded, a failed batch case); empty when it can.
    problem: str = ""
    status: str = TODO
    #: This reader's reason for skipping it.
    reason: str = ""
    #: Who annotated it (record readers, adjudications included).
    readers: list[str] = field(default_factory=list)
    adjudicated_by: str | None = None

    @property
    def status_text(self) -> str:
        return f"{SKIPPED} ({self.reason})" if self.status == SKIPPED and self.reason else self.status

    @property
    def done(self) -> bool:
        """Done by this reader: annotated or skipped."""
        return self.status in (MINE, SKIPPED)

    @property
    def usable(self) -> bool:
        return bool(self.inputs.get("flair")) and not self.problem


@dataclass(frozen=True)
class Progress:
    """This reader's progress over the worklist: ``str()`` is "12 of 60 annotated, 3 skipped"."""

    annotated: int
    skipped: int
    total: int

    def __str__(self) -> str:
        return f"{self.annotated} of {self.total} annotated, {self.skipped} skipped"


class Worklist:
    """The cases of a cohort for one reader, their statuses and this reader's annotations (no Qt: a panel
    shows :attr:`cases` and calls :meth:`save`, :meth:`skip`, :meth:`next_case`, :meth:`previous`)."""

    def __init__(self, source: Path, reader: str, state_dir: Path, kind: str, cases: list[WorkCase]):
        self.source = source
        self.reader = check_reader(reader)
        self.state_dir = state_dir
        #: "batch", "manifest" or "folder" (BraTS/TextBraTS or DICOM studies).
        self.kind = kind
        self._by_id = {c.case_id: c for c in cases}
        self._order = BY_ID
        self._cases = sorted(cases, key=lambda c: c.case_id)
        #: Record files under the state folder that could not be used, with their reasons.
        self.problems: dict[str, str] = {}
        self.refresh()

    @classmethod
    def open(
        cls,
        source: str | os.PathLike,
        reader: str,
        state_dir: str | os.PathLike | None = None,
        *,
        order: str = BY_ID,
    ) -> Worklist:
        """The worklist of ``source`` (a BraTS/TextBraTS folder, a ``batch`` output folder or a CSV manifest)
        for ``reader``; its state in ``state_dir`` (default: ``_annotations`` beside the cohort)."""
        reader = check_reader(reader)
        path = Path(source)
        if not path.exists():
            raise InputError("cohort not found", path)
        if path.is_dir() and (path / BATCH_RECORDS).is_dir():
            kind, cases = "batch", _batch_cases(path)
        else:
            kind = "manifest" if path.is_file() else "folder"
            cases = _cohort_cases(path)
        if not cases:
            raise InputError("no case found", path)
        state = Path(state_dir) if state_dir else (path.parent if path.is_file() else path) / STATE_DIR
        worklist = cls(path, reader, state, kind, cases)
        worklist.order = order
        return worklist

    # --- reading ------------------------------------------------------------------------------------------
    @property
    def cases(self) -> list[WorkCase]:
        """The cases in the chosen order."""
        return list(self._cases)

    @property
    def order(self) -> str:
        return self._order

    @order.setter
    def order(self, order: str) -> None:
        if order not in ORDERS:
            raise InputError(f"unknown order {order!r}: {' or '.join(ORDERS)}")
        self._order = order
        self._cases = sorted(self._by_id.values(), key=_least_certain if order == LEAST_CERTAIN else _id_key)

    def case(self, case_id: str) -> WorkCase:
        try:
            return self._by_id[case_id]
        except KeyError:
            raise InputError(f"no case {case_id!r} in this worklist", self.source) from None

    def refresh(self) -> None:
        """Read the records again (another reader's folder copied in, say) and update every status."""
        self._records: dict[str, dict[str, Annotation]] = {}
        self.problems = {}
        if self.state_dir.is_dir():
            found, self.problems = read_annotations(self.state_dir)
            for annotation in found:
                self._records.setdefault(annotation.case_id, {})[annotation.folder] = annotation
        for case in self._by_id.values():
            self._update(case)

    def _update(self, case: WorkCase) -> None:
        records = self._records.get(case.case_id, {})
        annotated = [a for a in records.values() if a.status == ANNOTATED]
        case.readers = sorted(a.reader for a in annotated)
        adjudications = sorted(
            (a for a in annotated if a.adjudicated_by), key=lambda a: str(a.record.get("created"))
        )
        case.adjudicated_by = adjudications[-1].adjudicated_by if adjudications else None
        mine = records.get(self.reader)
        case.reason = ""
        if mine and mine.status == SKIPPED:
            case.status, case.reason = SKIPPED, str(mine.record.get("reason") or "")
        elif mine:
            case.status = MINE
        elif annotated:
            case.status = OTHERS
        else:
            case.status = DRAFTED if case.draft else TODO

    def progress(self) -> Progress:
        cases = self._by_id.values()
        return Progress(
            sum(c.status == MINE for c in cases), sum(c.status == SKIPPED for c in cases), len(self._by_id)
        )

    def next_case(self) -> WorkCase | None:
        """The first case, in the chosen order, that this reader has not done (annotated or skipped) and can
        annotate; None when there is none left."""
        return next((c for c in self._cases if not c.done and c.usable), None)

    def previous(self, case_id: str) -> WorkCase | None:
        """The case before ``case_id`` in the chosen order (None for the first)."""
        index = self._cases.index(self.case(case_id))
        return self._cases[index - 1] if index else None

    def following(self, case_id: str) -> WorkCase | None:
        """The case after ``case_id`` in the chosen order (None for the last)."""
        index = self._cases.index(self.case(case_id))
        return self._cases[index + 1] if index + 1 < len(self._cases) else None

    def draft_report(self, case_id: str) -> Report | None:
        """The batch draft's report value, or None when the case has none."""
        case = self.case(case_id)
        return read_report(case.draft) if case.draft else None

    def records(self, case_id: str) -> dict[str, Annotation]:
        """Every reader's record of the case (adjudications included), by reader folder."""
        self.case(case_id)
        return dict(self._records.get(case_id, {}))

    def record(self, case_id: str) -> dict | None:
        """This reader's record of the case, or None."""
        mine = self.records(case_id).get(self.reader)
        return dict(mine.record) if mine else None

    # --- writing ------------------------------------------------------------------------------------------
    def save(self, case_id: str, final_text: str, *, draft: Report | str | os.PathLike | None = None) -> Path:
        """Write this reader's annotation of ``case_id`` (the final text and its record); returns the record's
        path. ``draft``: the AI draft it started from, when it is not the batch draft (a report value the
        panel drafted, or a report folder); default: the batch draft, if any."""
        case = self._usable(case_id)
        record = self._annotation(case, final_text, self.reader, draft)
        return self._write(self.reader, record, record["final_text"])

    def adjudicate(
        self,
        case_id: str,
        final_text: str,
        *,
        by: str | None = None,
        draft: Report | str | os.PathLike | None = None,
    ) -> Path:
        """Write the adjudicated text of ``case_id`` as its own record (reader "adjudicated by NAME", in
        ``adjudicated-by-NAME/``), naming the readers' records it settles; ``curate`` prefers it."""
        case = self._usable(case_id)
        by = check_reader(by or self.reader)
        record = self._annotation(case, final_text, adjudication_label(by), draft)
        record["adjudicated_by"] = by
        record["adjudicates"] = [
            {"reader": a.reader, "record_sha256": a.sha256}
            for a in sorted(self._records.get(case_id, {}).values(), key=lambda a: a.folder)
            if a.status == ANNOTATED and not a.adjudicated_by
        ]
        return self._write(ADJUDICATION_PREFIX + by, record, record["final_text"])

    def skip(self, case_id: str, reason: str) -> Path:
        """Record that this reader skips ``case_id``, and why (a one-line reason)."""
        self.case(case_id)
        reason = " ".join(str(reason or "").split())
        if not reason:
            raise InputError("say why the case is skipped (one line)")
        record = {
            "format": FORMAT,
            "version": VERSION,
            "kind": KIND,
            "status": SKIPPED,
            "case_id": case_id,
            "reader": self.reader,
            "created": utc_iso(),
            "reason": reason,
        }
        return self._write(self.reader, record, None)

    def _usable(self, case_id: str) -> WorkCase:
        case = self.case(case_id)
        if not case.usable:
            raise InputError(f"case {case_id} cannot be annotated: {case.problem or 'no FLAIR'}", self.source)
        return case

    def _annotation(self, case: WorkCase, final_text: str, reader: str, draft) -> dict:
        if not isinstance(final_text, str) or not final_text.strip():
            raise InputError(f"the final text of {case.case_id} is empty")
        text = final_text.strip()
        report, report_file, report_sha = _draft_of(case, draft)
        if report is None:
            draft_block, draft_entities, diff, edited = None, None, "", False
            final_entities = build_report(text, model={}, input={}, timings={}).entities
        else:
            draft_text = report.text
            final_entities = report.with_text(text).entities
            draft_entities = report.entities
            diff = "\n".join(
                difflib.unified_diff(
                    draft_text.strip().splitlines(), text.splitlines(), "ai_draft", "final", lineterm=""
                )
            )
            edited = draft_text.strip() != text
            model = report.model or {}
            draft_block = {
                "text": draft_text,
                "report_json": report_file,
                "report_json_sha256": report_sha,
                "model": {k: model.get(k) for k in ("name", "preset", "checkpoint_sha256") if k in model},
            }
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": KIND,
            "status": ANNOTATED,
            "case_id": case.case_id,
            "reader": reader,
            "created": utc_iso(),
            "inputs": _input_entries(case),
            "draft": draft_block,
            "final_text": text,
            "edited": edited,
            "diff": diff,
            "entities": {"draft": draft_entities, "final": final_entities},
        }

    def _write(self, folder: str, record: dict, text: str | None) -> Path:
        """The text (or, for a skip, none), then the record: both atomic, in ``folder`` only, never over a
        record of another reader."""
        case = record["case_id"]
        if not safe_id(case):
            raise InputError(f"case id {case!r} is not usable as a file name")
        base = self.state_dir / folder
        path = base / RECORDS_DIR / f"{case}.json"
        if path.exists():
            try:
                previous = read_annotation(path)
            except InputError as exc:
                raise InputError(
                    f"a record is already there and is not this reader's ({exc.problem})", path
                ) from None
            record["supersedes"] = previous.sha256
        text_path = base / TEXT_DIR / case / f"{case}_flair_text.txt"
        if text is not None:
            write_text_atomic(text_path, text + "\n")
        write_text_atomic(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        if text is None and text_path.exists():
            text_path.unlink()  # a skip replaces this reader's earlier text of the case
        annotation = read_annotation(path)
        self._records.setdefault(case, {})[folder] = annotation
        self._update(self._by_id[case])
        return path


def _id_key(case: WorkCase) -> tuple:
    return (case.case_id,)


def _least_certain(case: WorkCase) -> tuple:
    """Least certain first: ascending agreement; drafts without one next; cases without a draft last."""
    if case.draft and case.agreement is not None:
        return (0, case.agreement, case.case_id)
    return (1 if case.draft else 2, 0.0, case.case_id)


def _draft_of(case: WorkCase, draft) -> tuple[Report | None, str | None, str | None]:
    """(report value, report.json path, its SHA-256) of the draft an annotation starts from."""
    if isinstance(draft, Report):
        return draft, None, sha256_bytes(report_json(draft).encode("utf-8"))
    folder = draft if draft is not None else case.draft
    if folder is None:
        return None, None, None
    file = Path(folder) / "report.json" if Path(folder).is_dir() else Path(folder)
    return read_report(file), str(file.resolve()), sha256_files([file])


def _input_entries(case: WorkCase) -> list[dict]:
    """Each input file (and the segmentation) with its SHA-256: what ``curate`` checks later."""
    entries = []
    for sequence, given in [*case.inputs.items(), *([("seg", case.seg)] if case.seg else [])]:
        path = Path(given)
        try:
            digest = input_digest([str(path)])
        except OSError as exc:
            raise InputError(f"unreadable input ({exc.strerror})", path) from None
        entries.append({"sequence": sequence, "path": str(path.resolve()), "sha256": digest})
    return entries


def _named(paths: list[str]) -> dict[str, str]:
    """Input files by sequence: the model's order (FLAIR first, then T1ce and T2)."""
    names = SEQUENCES.get(len(paths)) or ("flair",)
    return {name: path for name, path in zip(names, paths, strict=False)}


def _with_neighbours(inputs: dict[str, str], seg: str | None) -> tuple[dict[str, str], str | None]:
    """The other BraTS sequences beside a ``<id>_flair.nii(.gz)`` file where present, and its segmentation."""
    flair = Path(inputs.get("flair") or "")
    match = re.match(r"^(.+)_flair\.nii(\.gz)?$", flair.name)
    if match and flair.is_file():
        for name in (*VIEWED, "seg"):
            found = (case_images(flair.parent, match.group(1), (name,)) or {}).get(name)
            if found and name == "seg":
                seg = seg or str(found)
            elif found:
                inputs.setdefault(name, str(found))
    return {name: inputs[name] for name in VIEWED if name in inputs}, seg


def _cohort_cases(path: Path) -> list[WorkCase]:
    """A BraTS/TextBraTS folder, DICOM studies or a CSV manifest, as :func:`.inputs.find_cases` reads it
    (a manifest's T1ce and T2 columns too)."""
    cases = find_cases(path, 1)
    three: dict[str, list[str]] = {}
    if path.is_file():
        try:
            three = {c.case_id: c.inputs for c in find_cases(path, 3) if not c.problem}
        except InputError:
            three = {}
    out = []
    for found in cases:
        inputs = _named(three.get(found.case_id) or found.inputs[:1])
        inputs, seg = _with_neighbours(inputs, found.seg)
        out.append(WorkCase(found.case_id, inputs, seg, problem=found.problem))
    return out


def _batch_cases(out: Path) -> list[WorkCase]:
    """A ``batch`` output folder: every case of its table and records, with the draft, its agreement and
    warnings (cohort.csv; the records where it lacks them)."""
    table: dict[str, dict] = {}
    if (out / "cohort.csv").is_file():
        try:
            with open(out / "cohort.csv", newline="", encoding="utf-8") as fh:
                table = {row["case_id"]: row for row in csv.DictReader(fh) if row.get("case_id")}
        except (OSError, UnicodeDecodeError, csv.Error, KeyError):
            raise InputError("unreadable cohort table", out / "cohort.csv") from None
    ids = set(table) | {p.stem for p in (out / BATCH_RECORDS).glob("*.json")}
    cases = []
    for case_id in sorted(i for i in ids if safe_id(i)):
        record = read_batch_record(out, case_id) or {}
        row, shown = table.get(case_id, {}), record.get("row") or {}
        case = WorkCase(case_id)
        if record.get("status") == "done" and record.get("inputs"):
            case.inputs, case.seg = _with_neighbours(_named(list(record["inputs"])), record.get("seg"))
            if (out / case_id / "report.json").is_file():
                case.draft = str(out / case_id)
            agreement = row.get("agreement_min", "")
            agreement = shown.get("agreement_min") if agreement in ("", None) else agreement
            case.agreement = None if agreement in ("", None) else float(agreement)
            count = row.get("warning_count", "")
            case.warnings = int(count) if str(count).strip() else len(shown.get("warnings") or [])
        else:
            case.problem = str(record.get("error") or "not drafted by the batch: no input recorded")
        cases.append(case)
    return cases
