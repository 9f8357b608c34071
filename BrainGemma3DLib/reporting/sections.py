"""Findings and impression of a report text, and the sentence under a cursor.

Radiologists read the impression first; the PDF, report.txt, the DICOM SR and the Slicer panel show it apart.
These rules run where the report value is built (:func:`BrainGemma3DLib.reporting.report.build_report` and
:meth:`~BrainGemma3DLib.reporting.report.Report.with_text`); renderers read the value's ``sections``.
"""

from __future__ import annotations

import re

__all__ = ["SUMMARY_CUES", "sentence_at", "split_sections"]

_FINDINGS_NAMES = ("finding", "findings")
_IMPRESSION_NAMES = (
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "summary",
    "assessment",
    "opinion",
)
#: Headers that are neither findings nor impression: their content goes into neither section.
_OTHER_NAMES = (
    "technique",
    "history",
    "clinical history",
    "indication",
    "comparison",
    "clinical information",
)
_NAMES = "|".join(
    sorted((*_FINDINGS_NAMES, *_IMPRESSION_NAMES, *_OTHER_NAMES), key=len, reverse=True)
).replace(" ", r"\s+")
# A header starts a line or a sentence, may be decorated (markdown "#", "**") and qualified ("Overall
# impression"), and ends with ":" or a spaced dash or the end of its line; an all-capital header ("FINDINGS
# A mass ...") needs nothing after it.  "Findings are consistent with ..." is a sentence, not a header.
_HEADER = re.compile(
    r"(?:^|(?<=[.!?])[ \t]+)[ \t]*(?:#+[ \t]*)?(?:\*\*)?(?:(?:overall|final|clinical)[ \t]+)?"
    rf"(?:(?P<name>{_NAMES})(?:\*\*)?[ \t]*(?::|[-–—](?=\s)|(?=\r?\n|\Z))"
    r"|(?-i:(?P<caps>FINDINGS?|IMPRESSIONS?|CONCLUSIONS?|SUMMARY|ASSESSMENT))(?=[ \t]))(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)
#: Regular expressions (lower case, matched at a sentence's start) of sentences that summarise a report
#: without a header; the last such sentence is the impression.
SUMMARY_CUES: tuple[str, ...] = (
    r"overall\b",
    r"in (summary|conclusion)\b",
    r"to (summari[sz]e|conclude)\b",
    r"(summary|impression|conclusion)\b",
    r"(the |these )?(findings|features|appearances?) (are|is) (most )?(consistent|compatible|suggestive)\b",
    r"(the |these )?(findings|features|appearances?) (suggest|favou?r|represent|indicate)",
    r"(suggestive|consistent|compatible) with\b",
    r"suggestive of\b",
    r"most likely\b",
    r"normal (brain )?mri\b",
    r"no (acute )?intracranial abnormalit",
)
_SUMMARY = re.compile(r"(?:" + "|".join(SUMMARY_CUES) + r")")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def _kind(name: str) -> str:
    name = " ".join(name.lower().split())
    if name in _FINDINGS_NAMES:
        return "findings"
    return "impression" if name in _IMPRESSION_NAMES else "other"


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-empty sentence, so sections keep the text's own characters."""
    spans, start = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        if text[start : m.start()].strip():
            spans.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def sentence_at(text: str, offset: int) -> tuple[int, int] | None:
    """The (start, end) of the sentence holding character ``offset`` (a text cursor), or None between them.

    The Slicer panel asks "which regions support this statement?" for the sentence under the cursor; a
    cursor just after a sentence's full stop still means that sentence, as a reader would expect.
    """
    for start, end in _sentence_spans(text):
        if start <= offset <= end:
            return start, end
    return None


def split_sections(text: str) -> dict[str, str]:
    """Split a report into ``{"findings": ..., "impression": ...}``, keeping its own wording.

    Radiologists read the impression first, and the PDF and the Slicer panel show it apart, so it has to be
    found whether or not the model wrote headers.  With headers ("Findings:", "FINDINGS", "Impression -",
    "Conclusion:", any case; also inline, "... lobe. Impression: ..."), each section is the text under its
    header, headers removed; text before the first header and under unknown headers counts as findings, while
    "Technique:", "History:" and the like go into neither.  Without headers, the last sentence that starts
    like a summary (:data:`SUMMARY_CUES`: "Overall, ...", "In summary, ...", "Findings are consistent with
    ...") is the impression and everything else the findings; when no sentence does, the impression is "".
    """
    headers = list(_HEADER.finditer(text))
    if headers:
        parts: dict[str, list[str]] = {"findings": [], "impression": [], "other": []}
        preamble = text[: headers[0].start()].strip()
        if preamble:
            parts["findings"].append(preamble)
        for i, m in enumerate(headers):
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            body = text[m.end() : end].strip()
            if body:
                parts[_kind(m.group("name") or m.group("caps"))].append(body)
        return {"findings": "\n".join(parts["findings"]), "impression": "\n".join(parts["impression"])}

    spans = _sentence_spans(text)
    chosen = None
    for start, end in spans:
        lead = text[start:end].lstrip(" \t-*•\"'(").lower()
        if _SUMMARY.match(lead):
            chosen = (start, end)
    if chosen is None:
        return {"findings": text.strip(), "impression": ""}
    start, end = chosen
    before, after = text[:start].strip(), text[end:].strip()
    findings = f"{before} {after}" if before and after else before or after
    return {"findings": findings, "impression": text[start:end].strip()}
