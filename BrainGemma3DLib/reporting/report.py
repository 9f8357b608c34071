"""The one report value: built once from a draft and its evidence, read by every rendering.

A generated report is a *draft*: the radiologist reads, edits and signs it.  :class:`Report` holds everything
a reader or a program needs about it (text, sections, negation-aware entities, warnings with their kinds, the
evidence places, a tumour segmentation's measured facts, identity, model, decoding, input check, timings) and
is made in exactly two ways: :func:`build_report` from the model's draft, and :meth:`Report.with_text` from
an edit, each deriving what depends on the text exactly once.  Why one value: the PDF, report.txt, the DICOM
SR and SEG, the Slicer panel, the signing audit record and the cohort table used to re-derive entities and
warnings each on its own, so an edit could make them disagree about the same signed text.  They now render
this value and nothing else.

It is written as the versioned ``report.json`` contract (DESIGN.md §5, :meth:`Report.to_json`) and read back
by :meth:`Report.from_json`, which checks the schema version and says what is wrong in one line.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..io.stamps import utc_iso
from .checks import TEXT_KINDS, text_checks
from .entities import structured_entities
from .sections import split_sections

__all__ = [
    "NOTICE",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "WARNING_KINDS",
    "Report",
    "ReportWarning",
    "Sections",
    "build_report",
    "read_report",
    "report_text",
    "write_report",
]

#: Version of the report.json layout; bump it when a key changes meaning or disappears.  1.1 added
#: ``warning_kinds`` (one kind per entry of ``warnings``).
SCHEMA_VERSION = "1.1"
#: The versions :meth:`Report.from_json` reads (a 1.0 report gets its warnings' kinds recovered on reading).
READABLE_VERSIONS = ("1.0", "1.1")
#: Shown at the top of every report file: the text is a draft until a radiologist signs it.
NOTICE = "AI-generated draft — requires review by a radiologist"
#: Where a warning comes from: the input check (the scan itself; an edit never clears it), a check of the text
#: against its evidence (:data:`~.checks.TEXT_KINDS`: recomputed by an edit), or the caller ("other").
WARNING_KINDS = ("input", *TEXT_KINDS, "other")
#: report.json keys the value knows; any other key is kept as it was (``Report.extra``) on a round trip.
_KNOWN = (
    "schema_version", "status", "notice", "created", "text", "sections", "entities", "attribution",
    "warnings", "warning_kinds", "model", "input", "timings", "decoding", "explanation", "input_check",
    "measured", "ai_draft_text", "edited", "signed",
)  # fmt: skip
_REQUIRED = ("text", "sections", "entities", "warnings", "model", "input", "timings", "created")


@dataclass(frozen=True)
class ReportWarning:
    """One warning for the reader, with where it comes from (one of :data:`WARNING_KINDS`)."""

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Sections:
    """The report's findings and impression, in its own wording (:func:`.sections.split_sections`)."""

    findings: str
    impression: str

    def to_json(self) -> dict[str, str]:
        return {"findings": self.findings, "impression": self.impression}


def _copy(value):
    return copy.deepcopy(dict(value)) if value is not None else None


def _derived(text: str, attribution: dict | None, measured: dict | None):
    """What depends on the text: sections, entities and the text's warnings, derived once."""
    entities = structured_entities(text)
    checks = [
        ReportWarning(kind, sentence) for kind, sentence in text_checks(entities, attribution, measured)
    ]
    return Sections(**split_sections(text)), entities, checks


def _unique(warnings: Iterable[ReportWarning]) -> tuple[ReportWarning, ...]:
    out: list[ReportWarning] = []
    seen: set[str] = set()
    for warning in warnings:
        if warning.text not in seen:
            seen.add(warning.text)
            out.append(warning)
    return tuple(out)


@dataclass(frozen=True)
class Report:
    """A report draft (or a signed report) and everything known about it; immutable.

    Make one with :func:`build_report` or :meth:`from_json`; an edit is :meth:`with_text`, signing
    :meth:`signed_by`.  Dict fields are private copies: treat them as read-only.
    """

    text: str
    sections: Sections
    #: ``{"laterality", "lobes", "findings": {edema, necrosis, enhancement, mass_effect}, "lesion"}``.
    entities: dict
    warnings: tuple[ReportWarning, ...]
    model: dict
    input: dict
    timings: dict
    created: str
    #: Where the image evidence lies (:func:`.evidence.attribution_side`, plus lobe shares), or None.
    attribution: dict | None = None
    #: The LIME summary and the segments written, named by place, or None without an explanation.
    explanation: dict | None = None
    measured: dict | None = None
    decoding: dict | None = None
    input_check: dict | None = None
    status: str = "draft"
    notice: str = NOTICE
    #: The AI's own wording once the text was edited or signed (None while the text is the AI's).
    ai_draft_text: str | None = None
    edited: bool = False
    #: ``{"by", "at", "reason", "location"}`` once signed.
    signed: dict | None = None
    #: report.json keys this version does not know, kept as they were.
    extra: dict = field(default_factory=dict)

    # --- reading ----------------------------------------------------------------------------------------
    @property
    def warning_texts(self) -> list[str]:
        """The warnings as sentences, in order: the input check's, the text's checks, the caller's."""
        return [w.text for w in self.warnings]

    def warnings_of(self, *kinds: str) -> list[str]:
        return [w.text for w in self.warnings if w.kind in kinds]

    @property
    def identity(self) -> dict:
        """Patient and study fields read from a DICOM input or typed by the user; empty when none."""
        return dict((self.input or {}).get("identity") or {})

    @property
    def evidence_places(self) -> list[str]:
        """The explanation's segments by name ("#1 left frontal (w=..., mL)"), strongest first."""
        return [str(s["name"]) for s in (self.explanation or {}).get("segments") or [] if s.get("name")]

    @property
    def draft_text(self) -> str:
        """The AI's own wording (before any edit)."""
        return self.text if self.ai_draft_text is None else self.ai_draft_text

    def agreement_sentence(self) -> str:
        """How many of the model's drafts state what this one states (consensus decoding), weakest first, so
        the reader checks those first; empty for a greedy draft or once the text differs from the AI's (the
        shares describe the AI's wording, not the radiologist's)."""
        decoding = self.decoding or {}
        agreement = decoding.get("agreement")
        if not agreement or self.text != self.draft_text:
            return ""
        names = {"laterality": "side", "lesion": "lesion", "lobes": "lobes", "mass_effect": "mass effect"}
        ranked = sorted(agreement.items(), key=lambda kv: (kv[1], kv[0]))
        parts = ", ".join(f"{names.get(k, k)} {round(100 * v)}\u00a0%" for k, v in ranked)
        return (
            f"Model agreement (share of its {decoding.get('drafts', '?')} drafts stating the same): {parts}."
        )

    # --- changing (a new value each time) ------------------------------------------------------------------
    def with_text(self, text: str) -> Report:
        """This report with the radiologist's ``text``: sections, entities and the text's warnings (side,
        lobe, diffuse, measured) derived once, against the same image evidence and measured facts, so a fix
        clears its warning and an edit that introduces a conflict gets one; the input check's and the caller's
        warnings stay.  The AI's wording is kept as ``ai_draft_text``; ``edited`` says whether the text now
        differs from it."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the report text is empty")
        ai = self.draft_text
        if text == self.text:
            return dataclasses.replace(self, ai_draft_text=ai)
        sections, entities, checks = _derived(text, self.attribution, self.measured)
        kept = [w for w in self.warnings if w.kind not in TEXT_KINDS]
        warnings = [w for w in kept if w.kind == "input"] + checks + [w for w in kept if w.kind != "input"]
        return dataclasses.replace(
            self,
            text=text,
            sections=sections,
            entities=entities,
            warnings=_unique(warnings),
            ai_draft_text=ai,
            edited=text != ai,
        )

    def signed_by(
        self, by: str, at: str, *, reason: str | None = None, location: str | None = None
    ) -> Report:
        """This report, signed: status "signed" and who signed it when (the text as it stands)."""
        return dataclasses.replace(
            self,
            status="signed",
            ai_draft_text=self.draft_text,
            edited=self.text != self.draft_text,
            signed={"by": by, "at": at, "reason": reason, "location": location},
        )

    # --- report.json -------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The report.json object (DESIGN.md §5), schema :data:`SCHEMA_VERSION`."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "notice": self.notice,
            "created": self.created,
            "text": self.text,
            "sections": self.sections.to_json(),
            "entities": copy.deepcopy(self.entities),
            "attribution": _copy(self.attribution),
            "warnings": self.warning_texts,
            "warning_kinds": [w.kind for w in self.warnings],
            "model": copy.deepcopy(self.model),
            "input": copy.deepcopy(self.input),
            "timings": copy.deepcopy(self.timings),
        }
        for key in ("decoding", "explanation", "input_check", "measured", "signed"):
            if getattr(self, key) is not None:
                out[key] = _copy(getattr(self, key))
        if self.ai_draft_text is not None:
            out["ai_draft_text"] = self.ai_draft_text
            out["edited"] = self.edited
        return out | copy.deepcopy(self.extra)

    @classmethod
    def from_json(cls, data: object, source: str | os.PathLike | None = None) -> Report:
        """The value of a report.json object (this version's or 1.0); one clear :class:`InputError` naming
        ``source`` otherwise (not an object, an unknown or missing schema version, a missing or mistyped
        key)."""
        if not isinstance(data, dict):
            raise InputError("not a BrainGemma3D report (expected a JSON object)", source)
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            what = "has no schema_version" if version is None else f"has schema version {version!r}"
            raise InputError(
                f"report {what}; this BrainGemma3D reads versions {', '.join(READABLE_VERSIONS)}", source
            )
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise InputError(f"report.json (version {version}) lacks {', '.join(missing)}", source)
        if not isinstance(data["text"], str) or not isinstance(data["entities"], dict):
            raise InputError(
                "report.json has a text that is not a string or entities that are not an object", source
            )
        sections = data["sections"]
        if not isinstance(sections, dict) or not all(
            isinstance(sections.get(k), str) for k in ("findings", "impression")
        ):
            raise InputError("report.json has malformed sections (findings, impression)", source)
        texts = data["warnings"]
        if not isinstance(texts, list) or not all(isinstance(w, str) for w in texts):
            raise InputError("report.json has warnings that are not a list of sentences", source)
        kinds = data.get("warning_kinds")
        if version == "1.0":
            kinds = _recovered_kinds(data)
        elif not isinstance(kinds, list) or len(kinds) != len(texts) or not set(kinds) <= set(WARNING_KINDS):
            raise InputError("report.json has warning_kinds that do not match its warnings", source)
        fields = {key: copy.deepcopy(data[key]) for key in _KNOWN if key in data}
        return cls(
            text=data["text"],
            sections=Sections(sections["findings"], sections["impression"]),
            entities=fields["entities"],
            warnings=tuple(ReportWarning(k, t) for k, t in zip(kinds, texts, strict=True)),
            model=dict(fields["model"] or {}),
            input=dict(fields["input"] or {}),
            timings=dict(fields["timings"] or {}),
            created=str(data["created"]),
            attribution=fields.get("attribution"),
            explanation=fields.get("explanation"),
            measured=fields.get("measured"),
            decoding=fields.get("decoding"),
            input_check=fields.get("input_check"),
            status=str(data.get("status", "draft")),
            notice=str(data.get("notice", NOTICE)),
            ai_draft_text=data.get("ai_draft_text"),
            edited=bool(data.get("edited", False)),
            signed=fields.get("signed"),
            extra={k: copy.deepcopy(v) for k, v in data.items() if k not in _KNOWN},
        )


def _recovered_kinds(data: dict) -> list[str]:
    """The kinds of a 1.0 report's warnings (1.0 kept only the sentences): the input check's own sentences,
    the text's checks recomputed against the report's evidence, the rest the caller's."""
    checked = set((data.get("input_check") or {}).get("warnings") or [])
    from_text = dict(
        (sentence, kind)
        for kind, sentence in text_checks(data["entities"], data.get("attribution"), data.get("measured"))
    )
    return ["input" if w in checked else from_text.get(w, "other") for w in data["warnings"]]


def build_report(
    text: str,
    *,
    model: dict,
    input: dict,
    timings: dict,
    attribution_side: dict | None = None,
    warnings: list[str] | None = None,
    created: str | None = None,
    decoding: dict | None = None,
    explanation: dict | None = None,
    input_check: dict | None = None,
    measured: dict | None = None,
) -> Report:
    """The report value of a generated draft: the one place a report is assembled.

    ``decoding`` (how the draft was chosen), ``explanation`` (the LIME summary and the segments written) and
    ``input_check`` (:func:`BrainGemma3DLib.model.input_check.check_input`: is the scan something the model
    knows) and ``measured`` (facts of a tumour segmentation, :func:`BrainGemma3DLib.anatomy.measure.measure`)
    are included when given.  ``status`` is "draft": only signing makes it final.  The warnings are the input
    check's (first: they qualify the whole draft), the text's checks against ``attribution_side`` and
    ``measured`` (:func:`.checks.text_checks`), then the caller's own ``warnings``, without repeats.
    ``created`` defaults to now, ISO 8601 UTC to the second ("2026-11-23T08:00:00Z").  The given dicts are
    copied, so later changes by the caller do not alter it.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a string, got {type(text).__name__}")
    side = copy.deepcopy(attribution_side) if attribution_side else None
    measured = _copy(measured)
    sections, entities, checks = _derived(text, side, measured)
    given = [ReportWarning("input", str(w)) for w in (input_check or {}).get("warnings") or []]
    given += checks + [ReportWarning("other", str(w)) for w in warnings or []]
    return Report(
        text=text,
        sections=sections,
        entities=entities,
        warnings=_unique(given),
        model=_copy(model),
        input=_copy(input),
        timings=_copy(timings),
        created=created or utc_iso(),
        attribution=side,
        explanation=_copy(explanation),
        measured=measured,
        decoding=_copy(decoding),
        input_check=_copy(input_check),
    )


def read_report(path: str | os.PathLike) -> Report:
    """The report of a report folder (its report.json) or of a report.json file; one clear error otherwise."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError("not a report folder (no report.json)" if path.is_dir() else "file not found", path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable report.json ({type(exc).__name__})", file) from exc
    return Report.from_json(data, file)


# --- renderings: report.txt, report.json --------------------------------------------------------------------


def report_text(report: Report) -> str:
    """The report.txt content: the notice, the sections under headers, the warnings, where it came from."""
    lines = [report.notice, ""]
    findings, impression = report.sections.findings, report.sections.impression
    if findings or not impression:
        lines += ["FINDINGS:", findings or "(no text)", ""]
    if impression:
        lines += ["IMPRESSION:", impression, ""]
    if report.warnings:
        lines += ["WARNINGS:", *(f"- {w}" for w in report.warning_texts), ""]
    elif report.attribution:
        lines += ["Left/right check: the text agrees with the image evidence (no conflict found).", ""]
    agreement = report.agreement_sentence()
    if agreement:
        lines += [agreement, ""]
    origin = str(report.model.get("name") or "")
    if report.model.get("preset") and report.model.get("preset") != report.model.get("name"):
        origin = f"{origin} (preset {report.model['preset']})".strip()
    footer = f"Status: {report.status}; created {report.created}"
    lines.append(footer + (f"; model: {origin}" if origin else ""))
    return "\n".join(lines) + "\n"


def json_default(value):
    """numpy scalars/arrays and paths in caller-given dicts become plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def report_json(report: Report) -> str:
    """report.json's text (strict JSON: numpy values and paths made plain)."""
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=json_default) + "\n"


def write_report(report: Report, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``folder/report.json`` and ``folder/report.txt`` atomically; return their paths.

    Both texts are built before either file is written, so a report that cannot be serialised leaves
    nothing behind; each file appears complete or not at all (no half-written report for a reader).
    """
    folder = Path(folder)
    as_json, as_text = report_json(report), report_text(report)
    json_path = write_text_atomic(folder / "report.json", as_json)
    txt_path = write_text_atomic(folder / "report.txt", as_text)
    return json_path, txt_path
