"""The report PDF: an unsigned draft for review, and the final version that ``braingemma3d sign`` signs.

What a reader of a printed or forwarded page must never miss is on the page itself: the AI notice (every
page's footer and a box under the title), a diagonal DRAFT watermark on every page until a radiologist signs,
the warnings (a scan unlike the training data, a left/right conflict) before the text, three key images in
radiological convention with orientation letters, the input check's result, and the model and input digests
that say exactly what wrote the draft from which files.  Header fields (institution, patient, study) appear
only when given: nothing is invented.

The draft embeds a bundle file (:data:`BUNDLE_NAME`: the report value as report.json, the header fields and
the three PNGs, base64) so that signing can rebuild the final PDF from the draft alone, without the input
images or the model. The final PDF embeds its own bundle too (status "signed"), so machines can read the
signed report without parsing page text. The bottom of the last page keeps :data:`SIGNATURE_BOX` free for
the visible signature that :mod:`BrainGemma3DLib.reporting.signing` places there.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Frame,
    Image,
    KeepTogether,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from ..io.atomic import atomic_path
from ..io.errors import InputError
from .report import NOTICE, Report, json_default

__all__ = [
    "BUNDLE_NAME",
    "FIELD_LABELS",
    "SIGNATURE_BOX",
    "SIGNATURE_FIELD",
    "Bundle",
    "build_pdf",
    "load_bundle",
    "read_bundle",
]

PAGE_SIZE = A4
MARGIN = 15 * mm
#: Rectangle (x1, y1, x2, y2), in PDF points from the bottom-left corner of the LAST page, kept free for the
#: visible digital signature.  Platypus content never enters it (the text frame ends above it on every page).
SIGNATURE_BOX = (MARGIN, 30.0, MARGIN + 270.0, 92.0)
#: Name of the signature form field that signing creates in :data:`SIGNATURE_BOX`.
SIGNATURE_FIELD = "RadiologistSignature"
#: Name of the embedded file that carries everything needed to rebuild the report.
BUNDLE_NAME = "braingemma3d-report.json"
BUNDLE_FORMAT = "braingemma3d-report-bundle"
BUNDLE_VERSION = 1
#: Header fields the PDF can show (key in ``fields``, label), in this order; only given ones appear.
FIELD_LABELS = (
    ("institution", "Institution"),
    ("patient_name", "Patient name"),
    ("patient_id", "Patient ID"),
    ("study_date", "Study date"),
    ("accession", "Accession"),
)
TITLE_DRAFT = "Brain MRI — AI report draft"
TITLE_FINAL = "Brain MRI — AI-assisted report"
NOT_A_REPORT = "not a BrainGemma3D report PDF or it is corrupted"
VIEW_CAPTIONS = {
    "axial": "Axial — patient's right on image left",
    "coronal": "Coronal — patient's right on image left",
    "sagittal": "Sagittal — anterior on image left",
}
_FRAME_BOTTOM = SIGNATURE_BOX[3] + 22.0  # room for the box's caption above it
_FINDING_NAMES = (
    ("edema", "Edema"),
    ("necrosis", "Necrosis"),
    ("enhancement", "Enhancement"),
    ("mass_effect", "Mass effect"),
)
_INK = colors.HexColor("#1d2733")
_MUTED = colors.HexColor("#5b6672")
_RULE = colors.HexColor("#c7ced6")


@dataclass
class Bundle:
    """What a report PDF embeds: the report value, its key images (PNG bytes) and the header fields."""

    report: Report
    images: dict[str, bytes]
    fields: dict[str, str] = field(default_factory=dict)
    draft: bool = True


# --- fonts and styles ---------------------------------------------------------------------------------------


@functools.cache
def _fonts() -> tuple[str, str]:
    """Bitstream Vera (shipped with reportlab, embedded as a subset): wider Unicode cover than Helvetica, and
    identical glyphs on every viewer."""
    import reportlab

    folder = Path(reportlab.__file__).parent / "fonts"
    try:
        pdfmetrics.registerFont(TTFont("BG3D-Sans", str(folder / "Vera.ttf")))
        pdfmetrics.registerFont(TTFont("BG3D-Sans-Bold", str(folder / "VeraBd.ttf")))
        pdfmetrics.registerFontFamily("BG3D-Sans", normal="BG3D-Sans", bold="BG3D-Sans-Bold")
    except Exception:  # a stripped reportlab: the standard fonts still cover Latin-1
        return "Helvetica", "Helvetica-Bold"
    return "BG3D-Sans", "BG3D-Sans-Bold"


@functools.cache
def _styles() -> dict[str, ParagraphStyle]:
    regular, bold = _fonts()
    base = ParagraphStyle("base", fontName=regular, fontSize=9, leading=12, textColor=_INK)
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontName=bold, fontSize=16, leading=20),
        "status": ParagraphStyle("status", parent=base, fontSize=8.5, textColor=_MUTED, alignment=2),
        "h2": ParagraphStyle("h2", parent=base, fontName=bold, fontSize=10.5, leading=14, spaceBefore=6),
        "body": ParagraphStyle("body", parent=base, fontSize=9.5, leading=13),
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5, textColor=_MUTED),
        "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10),
        "cellb": ParagraphStyle("cellb", parent=base, fontName=bold, fontSize=8, leading=10),
        "mono": ParagraphStyle("mono", parent=base, fontName="Courier", fontSize=7, leading=9),
        "notice": ParagraphStyle("notice", parent=base, fontName=bold, fontSize=9.5, leading=12.5),
        "warn": ParagraphStyle(
            "warn", parent=base, fontSize=9, leading=12, textColor=colors.HexColor("#7a1010")
        ),
        "caption": ParagraphStyle(
            "caption", parent=base, fontSize=7, leading=8.5, alignment=1, textColor=_MUTED
        ),
    }


#: Stand-ins for characters the embedded font lacks (a missing glyph prints as an empty box).
_STAND_INS = {"→": "->", "←": "<-", "↔": "<->", "⇒": "=>", "↑": "up", "↓": "down", "≈": "~", "≠": "!="}


@functools.cache
def _covered() -> frozenset[int] | None:
    """Code points the body font can draw (None: a standard font, leave the text to reportlab)."""
    font = pdfmetrics.getFont(_fonts()[0])
    table = getattr(getattr(font, "face", None), "charToGlyph", None)
    return frozenset(table) if isinstance(table, dict) else None


def _drawable(text: str) -> str:
    """``text`` with characters the font cannot draw replaced by a stand-in, their ASCII base, or "?"."""
    covered = _covered()
    if covered is None or all(ord(c) in covered or c in "\n\t" for c in text):
        return text
    out = []
    for c in text:
        if ord(c) in covered or c in "\n\t":
            out.append(c)
        else:
            base = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
            out.append(_STAND_INS.get(c) or base or "?")
    return "".join(out)


def _p(text: object, style: str = "base") -> Paragraph:
    """A paragraph of plain text (escaped; line breaks kept; undrawable characters replaced)."""
    return Paragraph(escape(_drawable(str(text))).replace("\n", "<br/>"), _styles()[style])


# --- page content -------------------------------------------------------------------------------------------


def _finding_word(value: object) -> str:
    return {True: "present", False: "absent"}.get(value, "not stated")  # type: ignore[arg-type]


def _human_time(iso: str | None) -> str:
    """ "2026-11-23T08:49:01Z" as "2026-11-23 08:49:01 UTC" for people; other strings unchanged."""
    if not iso:
        return "?"
    text = str(iso)
    return text.replace("T", " ").replace("Z", " UTC") if text.endswith("Z") and "T" in text else text


def _notice_text(report: Report, draft: bool) -> str:
    signed = report.signed or {}
    if draft or not signed:
        return f"{NOTICE}. Not for clinical decisions until a radiologist has reviewed and signed it."
    return (
        f"AI-assisted report, reviewed and signed by {signed.get('by', '?')} on "
        f"{_human_time(signed.get('at'))}. Original notice: {NOTICE}."
    )


def _boxed(flowables: list, background: str, border: str, width: float) -> Table:
    table = Table([[flowables]], colWidths=[width])
    table.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(background)),
                ("BOX", (0, 0), (-1, -1), 1.2, colors.HexColor(border)),
                ("LEFTPADDING", (0, 0), (-1, -1), 7),
                ("RIGHTPADDING", (0, 0), (-1, -1), 7),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return table


def _grid_style(header_rows: int = 0, label_col: bool = False) -> TableStyle:
    commands = [
        ("GRID", (0, 0), (-1, -1), 0.5, _RULE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]
    if header_rows:
        commands.append(("BACKGROUND", (0, 0), (-1, header_rows - 1), colors.HexColor("#eef1f4")))
    if label_col:
        commands.append(("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef1f4")))
    return TableStyle(commands)


def _header_fields(fields: dict | None, width: float) -> list:
    given = []
    for key, label in FIELD_LABELS:
        value = (fields or {}).get(key) or (fields or {}).get(key.replace("_", "-"))
        if value is not None and str(value).strip():
            given.append((label, str(value).strip()))
    if not given:
        return []
    rows, row = [], []
    for label, value in given:  # two label/value pairs per row
        row += [_p(label, "cellb"), _p(value, "cell")]
        if len(row) == 4:
            rows.append(row)
            row = []
    if row:
        rows.append(row + [_p(""), _p("")])
    quarter = width / 4
    table = Table(rows, colWidths=[quarter * 0.6, quarter * 1.4, quarter * 0.6, quarter * 1.4])
    style = _grid_style()
    style.add("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef1f4"))
    style.add("BACKGROUND", (2, 0), (2, -1), colors.HexColor("#eef1f4"))
    table.setStyle(style)
    return [table, Spacer(1, 6)]


def _warnings(report: Report, draft: bool, width: float) -> list:
    warnings = [w for w in report.warning_texts if w.strip()]
    if not warnings:
        return []
    heading = f"WARNING{'S' if len(warnings) > 1 else ''}"
    inner = [_p(f"{heading} — check before signing" if draft else f"{heading} noted at signing", "notice")]
    inner += [_p(f"• {w}", "warn") for w in warnings]
    return [_boxed(inner, "#fdecea", "#c62828", width), Spacer(1, 6)]


#: Characters per paragraph flowable: reportlab re-wraps a paragraph each time it splits across a page, so
#: one huge paragraph costs quadratic time; blocks of this size keep a long report linear.
_BLOCK_CHARS = 1500


def _blocks(text: str, style: str) -> list:
    """``text`` as paragraphs of at most about ``_BLOCK_CHARS`` characters, broken at line ends (kept as
    line breaks) and, inside an overlong line, after a sentence or a word."""
    lines: list[str] = []
    for line in text.split("\n"):
        while len(line) > _BLOCK_CHARS:
            cut = max(line.rfind(". ", 0, _BLOCK_CHARS), line.rfind(" ", 0, _BLOCK_CHARS // 2)) + 1
            cut = cut if cut > 0 else _BLOCK_CHARS
            lines.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        lines.append(line)
    blocks, current, size = [], [], 0
    for line in lines:
        if current and size + len(line) > _BLOCK_CHARS:
            blocks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    blocks.append("\n".join(current))
    return [_p(block, style) for block in blocks]


def _text_sections(report: Report) -> list:
    findings, impression = report.sections.findings.strip(), report.sections.impression.strip()
    out: list = []
    if findings or not impression:
        out += [_p("Findings", "h2"), *_blocks(findings or report.text or "(no text)", "body")]
    if impression:
        out += [_p("Impression", "h2"), *_blocks(impression, "body")]
    return out


def _entities(report: Report, width: float) -> list:
    entities = report.entities
    findings = entities.get("findings") or {}
    lobes = ", ".join(entities.get("lobes") or []) or "none stated"
    header = ["Laterality", "Lobes", "Lesion", *(name for _key, name in _FINDING_NAMES)]
    values = [
        str(entities.get("laterality") or "none"),
        lobes,
        "yes" if entities.get("lesion") else "no",
        *(_finding_word(findings.get(key)) for key, _name in _FINDING_NAMES),
    ]
    cols = [0.12, 0.25, 0.09, 0.11, 0.11, 0.16, 0.16]
    table = Table(
        [[_p(h, "cellb") for h in header], [_p(v, "cell") for v in values]],
        colWidths=[c * width for c in cols],
    )
    table.setStyle(_grid_style(header_rows=1))
    out = [_p("Structured findings (extracted from the text above)", "h2"), table]
    agreement = report.agreement_sentence()
    if agreement:
        out.append(_p(agreement, "small"))
    side = report.attribution
    if side and side.get("side"):
        share = ""
        if side.get("side") in ("left", "right"):
            fraction = float(side.get(f"{side['side']}_fraction", 0.0))
            share = f" ({round(100 * fraction)} % of the positive attribution)"
        out.append(
            _p(
                f"Image evidence (where the model looked): patient's {side['side']}{share}."
                if side["side"] != "none"
                else "Image evidence (where the model looked): no positive attribution.",
                "small",
            )
        )
    places = report.evidence_places
    if places:  # named by place ("#1 left frontal (w=..., mL)") when the atlas was registered
        out.append(_p("Strongest regions: " + "; ".join(places[:3]) + ".", "small"))
    return out


def _measured(report: Report, width: float) -> list:
    """The facts of a tumour segmentation, when the report had one: volumes, diameter, place."""
    measured = report.measured
    if not measured:
        return []
    volumes = measured.get("volumes_ml") or {}
    header = ["Enhancing", "Necrotic / non-enh. core", "Oedema", "Whole", "Largest diameter", "Place"]
    shift = measured.get("midline_shift_mm")
    values = [
        *(f"{float(volumes.get(k, 0.0)):.1f} mL" for k in ("enhancing", "core", "edema", "whole")),
        f"{float(measured.get('largest_diameter_mm') or 0.0):.0f} mm",
        str(measured.get("place") or "not named (no atlas)"),
    ]
    cols = [0.13, 0.19, 0.12, 0.11, 0.15, 0.30]
    table = Table(
        [[_p(h, "cellb") for h in header], [_p(v, "cell") for v in values]],
        colWidths=[c * width for c in cols],
    )
    table.setStyle(_grid_style(header_rows=1))
    note = "midline shift not measured" if shift is None else f"midline shift {float(shift):.1f} mm"
    return [Spacer(1, 4), _p(f"Measured on the tumour segmentation ({note})", "h2"), table]


def _key_images(images: dict[str, bytes], width: float) -> list:
    views = [v for v in ("axial", "coronal", "sagittal") if v in images]
    if not views:
        return []
    gap = 6.0
    size = (width - gap * (len(views) - 1)) / 3
    cells = [Image(io.BytesIO(images[v]), width=size, height=size) for v in views]
    captions = [_p(VIEW_CAPTIONS[v], "caption") for v in views]
    table = Table([cells, captions], colWidths=[size + gap] * (len(views) - 1) + [size])
    table.setStyle(
        TableStyle(
            [
                ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), gap),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    note = _p(
        "Key images: orthogonal slices through the strongest image evidence (or the head's centre), sampled "
        "along the patient's axes; warm overlay = positive attribution (where the model looked), not a "
        "segmentation.",
        "small",
    )
    return [KeepTogether([_p("Key images", "h2"), table, note])]


def _provenance(report: Report, draft: bool, width: float) -> list:
    model, given = report.model, report.input
    rows = []
    name = str(model.get("name") or "unknown")
    if model.get("preset"):
        name += f" (preset {model['preset']})"
    rows.append(("Model", _p(name, "cell")))
    rows.append(("Checkpoint SHA-256", _p(model.get("checkpoint_sha256") or "not recorded", "mono")))
    checked = report.input_check or {}
    if checked.get("summary"):  # is the scan one the model knows (its failures are also among the warnings)
        rows.append(("Input check", _p(str(checked["summary"]), "cell")))
    decoding = report.decoding or {}
    if decoding.get("method") == "published sampling":
        rows.append(
            (
                "Decoding",
                _p(
                    f"the published model's sampling (temperature {decoding.get('temperature')}, top-p "
                    f"{decoding.get('top_p')}, seed {decoding.get('seed')})",
                    "cell",
                ),
            )
        )
    if decoding.get("method") == "consensus":
        rows.append(
            (
                "Decoding",
                _p(
                    f"consensus of {decoding.get('drafts')} drafts (greedy + {decoding.get('samples')} "
                    f"sampled at temperature {decoding.get('temperature')}, seed {decoding.get('seed')}); "
                    f"chosen: {decoding.get('chosen')}",
                    "cell",
                ),
            )
        )
    paths = list(given.get("paths") or [])
    digests = list(given.get("sha256") or [])
    for i, digest in enumerate(digests or [None]):
        label = "Input SHA-256" if len(digests) <= 1 else f"Input {i + 1} SHA-256"
        file_name = Path(paths[i]).name if i < len(paths) else ""
        value = f"{digest or 'not recorded'}" + (f"  ({file_name})" if file_name else "")
        rows.append((label, _p(value, "mono")))
    geometry = []
    if given.get("shape"):
        geometry.append("shape " + " × ".join(str(s) for s in given["shape"]))
    spacing = given.get("spacing") or given.get("spacing_mm")
    if spacing:
        geometry.append("spacing " + " × ".join(f"{float(s):g}" for s in spacing) + " mm")
    if given.get("orientation"):
        geometry.append(f"orientation {given['orientation']}")
    if geometry:
        rows.append(("Input geometry", _p(", ".join(geometry), "cell")))
    rows.append(
        (
            "Draft created",
            _p(_human_time(report.created) if report.created else "unknown", "cell"),
        )
    )
    signed = report.signed or {}
    if not draft and signed:
        rows.append(("Signed", _p(f"{_human_time(signed.get('at'))} by {signed.get('by', '?')}", "cell")))
    status = "draft — not signed" if draft else (report.status or "final")
    if report.edited:
        status += " (text edited by the radiologist)"
    rows.append(("Status", _p(status, "cell")))
    table = Table(
        [[_p(label, "cellb"), value] for label, value in rows], colWidths=[0.22 * width, 0.78 * width]
    )
    table.setStyle(_grid_style(label_col=True))
    return [_p("Provenance", "h2"), table]


def _story(report: Report, images: dict[str, bytes], draft: bool, fields: dict | None, width: float) -> list:
    title = TITLE_DRAFT if draft else TITLE_FINAL
    signed_at = (report.signed or {}).get("at")
    status = "Unsigned draft" if draft else (f"Signed {_human_time(signed_at)}" if signed_at else "Final")
    head = Table(
        [[_p(title, "title"), _p(status, "status")]], colWidths=[0.7 * width, 0.3 * width], style=_no_pad()
    )
    notice_colours = ("#fff4d6", "#d9a400") if draft else ("#e8f1fb", "#3a6ea5")
    story: list = [
        head,
        Spacer(1, 4),
        _boxed([_p(_notice_text(report, draft), "notice")], *notice_colours, width),
    ]
    story.append(Spacer(1, 6))
    story += _header_fields(fields, width)
    story += _warnings(report, draft, width)
    story += _text_sections(report)
    story.append(Spacer(1, 4))
    story += _entities(report, width)
    story += _measured(report, width)
    story.append(Spacer(1, 4))
    story += _key_images(images, width)
    story.append(Spacer(1, 4))
    story += _provenance(report, draft, width)
    return story


def _no_pad() -> TableStyle:
    return TableStyle(
        [
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
        ]
    )


# --- page decoration ----------------------------------------------------------------------------------------


class _Canvas(rl_canvas.Canvas):
    """A canvas that holds its pages until the end, so every page can say "page n of N" and the last one can
    carry the signature box (its number is known only once the text has been laid out)."""

    def __init__(self, *args, decorate=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._held: list[dict] = []
        self._decorate = decorate

    def showPage(self) -> None:  # noqa: N802 (reportlab's name)
        self._held.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._held)
        for number, state in enumerate(self._held, start=1):
            self.__dict__.update(state)
            if self._decorate is not None:
                self._decorate(self, number, total)
            super().showPage()
        super().save()


def _decorate(canvas: rl_canvas.Canvas, number: int, total: int, *, draft: bool, signer: str | None) -> None:
    regular, bold = _fonts()
    width, height = PAGE_SIZE
    canvas.saveState()
    # Footer on every page: the notice travels with any single page that gets printed or forwarded.
    canvas.setStrokeColor(_RULE)
    canvas.setLineWidth(0.5)
    canvas.line(MARGIN, 22, width - MARGIN, 22)
    canvas.setFont(regular, 7)
    canvas.setFillColor(_MUTED)
    footer = NOTICE
    if not draft and signer:
        footer = f"AI-assisted report, reviewed and signed by {signer}. {NOTICE}."
    canvas.drawString(MARGIN, 12, _drawable(footer))
    canvas.drawRightString(width - MARGIN, 12, f"Page {number} of {total}")
    if number == total:
        x1, y1, x2, y2 = SIGNATURE_BOX
        canvas.setFont(bold, 7.5)
        canvas.setFillColor(_INK)
        canvas.drawString(x1, y2 + 5, "Radiologist's digital signature")
        if draft:
            canvas.setDash(3, 2)
            canvas.setStrokeColor(_MUTED)
            canvas.rect(x1, y1, x2 - x1, y2 - y1, stroke=1, fill=0)
            canvas.setFont(regular, 7.5)
            canvas.setFillColor(_MUTED)
            canvas.drawCentredString((x1 + x2) / 2, (y1 + y2) / 2 - 3, "Reserved — not signed")
    if draft:  # over the content, translucent: visible on text and images alike
        canvas.setFillColor(colors.Color(0.80, 0.10, 0.10, alpha=0.13))
        canvas.setFont(bold, 130)
        canvas.translate(width / 2, height / 2)
        canvas.rotate(50)
        canvas.drawCentredString(0, -45, "DRAFT")
    canvas.restoreState()


def _render(report: Report, images: dict[str, bytes], draft: bool, fields: dict | None) -> bytes:
    buffer = io.BytesIO()
    width, height = PAGE_SIZE
    frame_width = width - 2 * MARGIN
    frame = Frame(
        MARGIN, _FRAME_BOTTOM, frame_width, height - MARGIN - _FRAME_BOTTOM, id="body", leftPadding=0,
        rightPadding=0, topPadding=0, bottomPadding=0,
    )  # fmt: skip
    title = TITLE_DRAFT if draft else TITLE_FINAL
    doc = BaseDocTemplate(
        buffer,
        pagesize=PAGE_SIZE,
        title=title,
        author=(report.signed or {}).get("by") or "BrainGemma3D (AI draft)",
        subject=NOTICE,
        creator="BrainGemma3D",
        producer="BrainGemma3D (reportlab)",
        pageTemplates=[PageTemplate(id="page", frames=[frame])],
    )
    signer = (report.signed or {}).get("by")
    decorate = functools.partial(_decorate, draft=draft, signer=signer)
    doc.build(
        _story(report, images, draft, fields, frame_width),
        canvasmaker=functools.partial(_Canvas, decorate=decorate),
    )
    return buffer.getvalue()


# --- the embedded bundle ------------------------------------------------------------------------------------


def _bundle_bytes(bundle: Bundle) -> bytes:
    payload = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "draft": bundle.draft,
        "report": bundle.report.to_json(),
        "fields": bundle.fields,
        "images": {name: base64.b64encode(data).decode("ascii") for name, data in bundle.images.items()},
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=json_default).encode("utf-8")


def _embed(pdf: bytes, data: bytes) -> bytes:
    """Attach ``data`` as :data:`BUNDLE_NAME` (an incremental update: the rendered pages stay untouched)."""
    from pyhanko.pdf_utils.embed import EmbeddedFileObject, EmbeddedFileParams, FileSpec, embed_file
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    stream = EmbeddedFileObject.from_file_data(
        writer, data, mime_type="application/json", params=EmbeddedFileParams(embed_checksum=True)
    )
    embed_file(
        writer,
        FileSpec(
            file_spec_string=BUNDLE_NAME,
            file_name=BUNDLE_NAME,
            embedded_data=stream,
            description="BrainGemma3D report.json and key images (used by braingemma3d sign)",
        ),
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def build_pdf(
    report: Report,
    images: dict[str, bytes],
    out: str | os.PathLike,
    *,
    draft: bool = True,
    fields: dict | None = None,
) -> Path:
    """Write the report PDF of ``report`` to ``out`` atomically and return its path.

    ``report``: the report value (an edited one comes from :meth:`Report.with_text`; a final one is
    :meth:`Report.signed_by`): the PDF renders it and derives nothing.  ``images``: PNG bytes by view
    (:func:`~.keyimages.key_images`).  ``draft``: True for the unsigned draft (DRAFT watermark, reserved
    signature box), False for the version to sign.  ``fields``: optional header fields (:data:`FIELD_LABELS`
    keys); only those given and non-empty appear.
    """
    clean_fields = {
        key: str((fields or {}).get(key) or (fields or {}).get(key.replace("_", "-")) or "").strip()
        for key, _label in FIELD_LABELS
    }
    clean_fields = {k: v for k, v in clean_fields.items() if v}
    pdf = _render(report, images, draft, clean_fields)
    pdf = _embed(pdf, _bundle_bytes(Bundle(report, dict(images), clean_fields, draft)))
    with atomic_path(out) as tmp:
        tmp.write_bytes(pdf)
    return Path(out)


def load_bundle(pdf_path: str | os.PathLike) -> Bundle:
    """The bundle a report PDF embeds (report, images, header fields, draft flag).

    Raises :class:`InputError` "not a BrainGemma3D report PDF or it is corrupted" for anything else: a missing
    or unreadable file, another PDF, a damaged file or bundle.
    """
    from pyhanko.pdf_utils.reader import PdfFileReader

    path = Path(pdf_path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "not a file", path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if not data.startswith(b"%PDF-"):
        raise InputError(NOT_A_REPORT, path)
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        spec = _find_embedded(reader.root["/Names"]["/EmbeddedFiles"], BUNDLE_NAME)
        payload = json.loads(spec["/EF"]["/F"].get_object().data.decode("utf-8"))
        if payload.get("format") != BUNDLE_FORMAT or int(payload.get("version", 0)) > BUNDLE_VERSION:
            raise ValueError("unknown bundle format")
        data = payload["report"]
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ValueError("bundle without report text")
        images = {name: base64.b64decode(b64, validate=True) for name, b64 in payload["images"].items()}
        if not all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images.values()):
            raise ValueError("bundle image is not a PNG")
        fields = {str(k): str(v) for k, v in (payload.get("fields") or {}).items()}
        draft = bool(payload.get("draft", True))
    except Exception:  # any damage (PDF syntax, compression, JSON, base64) is the same problem for a user
        raise InputError(NOT_A_REPORT, path) from None
    return Bundle(
        Report.from_json(data, path), images, fields, draft
    )  # a report of an unknown version: says so


def _find_embedded(tree, name: str, depth: int = 0):
    """The file specification called ``name`` in an embedded-files name tree (flat or with kids)."""
    if depth > 16:
        raise ValueError("name tree too deep")
    tree = tree.get_object()
    if "/Names" in tree:
        entries = tree["/Names"]
        for i in range(0, len(entries) - 1, 2):
            if str(entries[i]) == name:
                return entries[i + 1].get_object()
    for kid in tree.get("/Kids", []):
        try:
            return _find_embedded(kid, name, depth + 1)
        except KeyError:
            continue
    raise KeyError(name)


def read_bundle(pdf_path: str | os.PathLike) -> tuple[Report, dict[str, bytes]]:
    """``(report, images)`` from a report PDF made by :func:`build_pdf` (see :func:`load_bundle`)."""
    bundle = load_bundle(pdf_path)
    return bundle.report, bundle.images
