"""One study in, one report folder out: what ``braingemma3d report`` and the Slicer engine both run.

Stages (each reported to ``progress`` by name, so a panel can show them): ``read`` the input files, ``model``
(load, unless the caller keeps one loaded), ``input_check`` (place the study on the model grid; is it a head,
the sequence the model reads, like the scans it was trained on? :mod:`BrainGemma3DLib.model.input_check`; a
failure warns, never stops), ``generate`` the draft, ``explain`` it (optional, 3D LIME), ``check`` left/right
consistency, ``pdf`` (key images + unsigned draft), ``write``. Everything is written to
a staging folder first and moved into ``--out`` only at the end, so a failed or cancelled run leaves no
partial output; ``cancel`` is polled between stages and inside the explanation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..anatomy import evidence_places, place_study
from ..anatomy.measure import measure
from ..explain import Cancelled, ExplainOptions, explain, write_attribution
from ..io.atomic import check_output_dir, replace_dir
from ..io.errors import InputError
from ..io.volume import load_study, load_volume
from ..reporting.consensus import DecodingOptions, decode
from ..reporting.evidence import attribution_side
from ..reporting.keyimages import key_images
from ..reporting.pdf import build_pdf
from ..reporting.report import build_report, write_report

#: (stage, fraction of the whole run at its start) for the progress bar.
STAGES = (
    ("read", 0.0),
    ("model", 0.05),
    ("input_check", 0.13),
    ("generate", 0.15),
    ("explain", 0.35),
    ("anatomy", 0.86),
    ("check", 0.9),
    ("pdf", 0.92),
    ("write", 0.98),
)
_START = dict(STAGES)
_NEXT = {name: (STAGES[i + 1][1] if i + 1 < len(STAGES) else 1.0) for i, (name, _f) in enumerate(STAGES)}

Progress = Callable[[str, float, str], None]

#: What an explanation writes, and what a report folder holds: ``--overwrite`` replaces such a set whole.
ATTRIBUTION_FILES = ("attribution.nii.gz", "attribution.seg.nrrd")
REPORT_FILES = ("report.json", "report.txt", "report.pdf", *ATTRIBUTION_FILES)


@dataclass
class ReportRequest:
    """What to report on and how (the command line's and the engine's options)."""

    inputs: Sequence[str | os.PathLike]
    out: str | os.PathLike
    model: str = "demo"
    device: str = "auto"
    explain: bool = False
    explain_options: ExplainOptions = field(default_factory=ExplainOptions)
    fields: dict[str, str] = field(default_factory=dict)  # institution, patient, study: never invented
    max_new_tokens: int | None = None
    decoding: DecodingOptions = field(default_factory=DecodingOptions)  # consensus of sampled drafts
    overwrite: bool = False  # replace a previous report in ``out`` (whole); else ``out`` must be new or empty
    quantize: str | None = None  # "4bit": MedGemma in NF4 (a checkpoint on real MedGemma)
    grid: tuple[int, int, int] | None = None  # a published checkpoint's grid (default: its scripts')
    seg: str | os.PathLike | None = (
        None  # a BraTS tumour segmentation: measured facts, checked against the text
    )
    series: str | None = None  # a DICOM study folder: the FLAIR series by UID or number (else by its tags)


def _stage(progress: Progress | None, cancel: Callable[[], bool] | None, name: str, message: str) -> float:
    if cancel is not None and cancel():
        raise Cancelled(f"cancelled before {name}")
    if progress is not None:
        progress(name, _START[name], message)
    return time.perf_counter()


def model_info(model, ref: str) -> dict:
    """The model block of report.json: what wrote the draft, down to the weights' SHA-256."""
    cfg = model.cfg
    names = {"demo": "BrainGemma3D demo (synthetic phantoms, not for clinical use)"}
    name = names.get(
        ref, "BrainGemma3D (published checkpoint)" if cfg.preset == "published" else "BrainGemma3D"
    )
    return {
        "name": name,
        "preset": cfg.preset,
        "checkpoint": "demo" if ref == "demo" else str(model.checkpoint_path or ref),
        "checkpoint_sha256": model.checkpoint_sha256,
        "checkpoint_files": dict(model.checkpoint_files),
        "grid": list(cfg.grid),
        "notes": list(model.load_notes),
        "encoder": cfg.encoder,
        "compressor": cfg.compressor,
        "visual_tokens": cfg.num_visual_tokens,
        "precision": getattr(model, "precision", "float32"),
    }


def header_fields(study, given: dict[str, str]) -> dict[str, str]:
    """The patient's and study's identity: fields given (command line, or the Slicer panel from its DICOM
    database), else the DICOM tags read with the series; never invented. The PDF header shows the names and
    dates; report.json ``input.identity`` keeps all of them, UIDs included."""
    tags = {
        "institution": "InstitutionName",
        "patient_name": "PatientName",
        "patient_id": "PatientID",
        "birth_date": "PatientBirthDate",
        "sex": "PatientSex",
        "study_date": "StudyDate",
        "study_time": "StudyTime",
        "study_description": "StudyDescription",
        "accession": "AccessionNumber",
        "referring_physician": "ReferringPhysicianName",
        "study_uid": "StudyInstanceUID",
        "series_uid": "SeriesInstanceUID",
        "frame_of_reference_uid": "FrameOfReferenceUID",
    }
    out = {k: v for k, v in given.items() if v}
    for key, tag in tags.items():
        if key not in out and study.meta.get(tag):
            out[key] = study.meta[tag]
    return out


def read_segmentation(path: str | os.PathLike, study) -> np.ndarray:
    """A BraTS tumour segmentation as labels on the study's voxels (1 core, 2 oedema, 4 enhancing).

    Another grid is resampled onto the study's (nearest neighbour, world coordinates); BraTS 2023's label 3
    (enhancing) is read as 4. Anything else is refused with one line naming the file.
    """
    seg = load_volume(path)
    values = {int(v) for v in np.unique(seg.data[0])}
    if (
        not values <= {0, 1, 2, 3, 4}
        or (3 in values and 4 in values)
        or seg.data.dtype.kind == "f"
        and not all(float(v).is_integer() for v in np.unique(seg.data[0]))
    ):
        raise InputError(
            f"not a BraTS tumour segmentation (labels {sorted(values)[:8]}; expected 0, 1, 2, 4)", path
        )
    if seg.shape != study.shape or not np.allclose(seg.affine, study.affine, atol=1e-3):
        seg = seg.resample_to(study.affine, study.shape, order=0)
    labels = np.rint(seg.data[0]).astype(np.uint8)
    labels[labels == 3] = 4
    return labels


def _evidence(found, mapping, placement):
    """Where the evidence lies: its side (midline), and with the atlas its lobes; and the map on the input's
    voxels (the key images draw it). (None, None) without an explanation."""
    if found is None:
        return None, None
    side = attribution_side(found.attribution_map(), mapping)
    volume = mapping.to_input(found.attribution_map())
    if placement is not None:
        side |= evidence_places(volume.data[0], placement)
    return side, volume


def _explain_on_grid(model, grid, mapping, text, span, options, progress, cancel):
    """The explanation stage of both entry points, its progress mapped into the stage's part of the bar."""

    lo, hi = _START["explain"], _NEXT["explain"]
    return explain(
        model,
        grid,
        mapping.foreground,
        mapping.grid_spacing,
        text,
        span=span,
        options=options,
        progress=None if progress is None else lambda f, m: progress("explain", lo + (hi - lo) * f, m),
        cancel=cancel,
    )


@dataclass
class PreparedStudy:
    """One study read, placed on the model grid and checked: what drafting and the later stages need.

    ``batch`` prepares several of these, drafts them in one pass (:func:`~BrainGemma3DLib.reporting.consensus.
    decode_many`) and finishes each with :func:`finish_report`; ``report`` does the same for one."""

    request: ReportRequest
    out: Path
    study: object
    labels: np.ndarray | None
    grid: np.ndarray
    mapping: object
    checked: dict
    timings: dict[str, float]


def _read_stage(request: ReportRequest, progress, cancel) -> tuple[Path, object, np.ndarray | None, float]:
    out = check_output_dir(request.out, REPORT_FILES, overwrite=request.overwrite)
    t = _stage(progress, cancel, "read", "reading the input")
    study = load_study(list(request.inputs), series=request.series)
    labels = read_segmentation(request.seg, study) if request.seg else None
    return out, study, labels, time.perf_counter() - t


def _check_stage(request, model, out, study, labels, timings, progress, cancel) -> PreparedStudy:
    from ..model.input_check import EXPECTED_SEQUENCES, check_input

    wanted = model.cfg.in_channels
    if study.data.shape[0] != wanted and len(request.inputs) == 1 and Path(request.inputs[0]).is_dir():
        # One study folder for a checkpoint that reads several sequences: each is chosen from the study.
        sequences = EXPECTED_SEQUENCES.get(wanted, ("flair",))
        study = load_study(list(request.inputs), sequences=sequences, series=request.series)
    if study.data.shape[0] != model.cfg.in_channels:
        raise InputError(
            f"the model reads {model.cfg.in_channels} sequence(s); {len(request.inputs)} input(s) were given",
            request.inputs[0],
        )
    t = _stage(
        progress, cancel, "input_check", "checking the input scan (head, sequence, training distribution)"
    )
    grid, mapping = study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
    checked = check_input(study, model, grid=grid, mapping=mapping)
    timings["input_check_s"] = time.perf_counter() - t
    return PreparedStudy(request, out, study, labels, grid, mapping, checked, timings)


def prepare_report(
    request: ReportRequest,
    model,
    *,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PreparedStudy:
    """Read one study for an already loaded ``model`` and check it (the stages before the draft)."""
    out, study, labels, read_s = _read_stage(request, progress, cancel)
    return _check_stage(request, model, out, study, labels, {"read_s": read_s}, progress, cancel)


def run_report(
    request: ReportRequest,
    *,
    model=None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Run every stage for one study; returns ``{"report": the Report value, "files": {name: path}}``.

    ``model``: an already loaded model (the engine keeps one between cases); else ``request.model`` is loaded.
    """
    from ..model import load

    out, study, labels, read_s = _read_stage(request, progress, cancel)
    timings: dict[str, float] = {"read_s": read_s}
    t = _stage(progress, cancel, "model", f"loading the model ({request.model})")
    if model is None:
        extra = {"quantize": request.quantize} if request.quantize else {}
        model = load(request.model, device=request.device, grid=request.grid, **extra)
    timings["model_s"] = time.perf_counter() - t
    prepared = _check_stage(request, model, out, study, labels, timings, progress, cancel)

    t = _stage(progress, cancel, "generate", "writing the draft")
    draft = decode(model, prepared.grid, request.decoding, max_new_tokens=request.max_new_tokens)
    timings["generate_s"] = time.perf_counter() - t
    return finish_report(prepared, model, draft, progress=progress, cancel=cancel)


def finish_report(
    prepared: PreparedStudy,
    model,
    draft,
    *,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """The stages after the draft (explain, anatomy, check, PDF, write) for a prepared study; returns what
    :func:`run_report` returns."""
    request, out, study, labels = prepared.request, prepared.out, prepared.study, prepared.labels
    grid, mapping, timings = prepared.grid, prepared.mapping, prepared.timings
    if not draft.text.strip():
        raise RuntimeError("the model wrote an empty report")

    found = None
    if request.explain:
        t = _stage(progress, cancel, "explain", "explaining the draft (3D LIME)")
        found = _explain_on_grid(
            model, grid, mapping, draft.text, None, request.explain_options, progress, cancel
        )
        timings["explain_s"] = time.perf_counter() - t

    placement = measured = None
    if found is not None or labels is not None:
        t = _stage(progress, cancel, "anatomy", "naming places (the scan registered to the MNI152 atlas)")
        placement = place_study(study.channel(0), exclude=None if labels is None else labels > 0)
        measured = None if labels is None else measure(labels, study.affine, placement)
        timings["anatomy_s"] = time.perf_counter() - t

    t = _stage(progress, cancel, "check", "checking left/right and lobe consistency")
    side, attribution_volume = _evidence(found, mapping, placement)
    timings["check_s"] = time.perf_counter() - t

    with replace_dir(out, REPORT_FILES, overwrite=request.overwrite) as tmp:
        t = _stage(progress, cancel, "pdf", "rendering key images and the PDF draft")
        files: dict[str, str] = {}
        explanation = None
        if found is not None:
            written = write_attribution(
                found,
                mapping,
                tmp,
                top_k=request.explain_options.top_k,
                midline_x=side["midline_ras_x"],
                placement=placement,
            )
            explanation = found.summary() | {"segments": written["segments"]}
            files["attribution"] = str(out / "attribution.nii.gz")
            files["segmentation"] = str(out / "attribution.seg.nrrd")
        point = side.get("peak_ras") if side else None
        images = key_images(study.channel(0), attribution_volume, point)
        timings["pdf_s"] = time.perf_counter() - t
        identity = header_fields(study, request.fields)
        report = build_report(
            draft.text,
            model=model_info(model, request.model),
            input=study.summary() | ({"identity": identity} if identity else {}),
            timings={k: round(v, 3) for k, v in timings.items()},
            attribution_side=side,
            decoding=draft.decoding,
            explanation=explanation,
            input_check=prepared.checked,
            measured=None if measured is None else measured | {"segmentation": str(request.seg)},
        )
        build_pdf(report, images, tmp / "report.pdf", draft=True, fields=identity)
        _stage(progress, cancel, "write", "writing the report files")
        write_report(report, tmp)
        files.update(json=str(out / "report.json"), text=str(out / "report.txt"), pdf=str(out / "report.pdf"))
    if progress is not None:
        progress("done", 1.0, f"report written to {out}")
    return {"report": report, "files": files}


def run_explain(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    text: str,
    *,
    model,
    span: tuple[int, int] | None = None,
    options: ExplainOptions | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    overwrite: bool = False,
) -> dict:
    """Explain a (possibly edited) report text, or one statement in it, for a study; write the two
    attribution files into ``out`` (a new or empty folder, or with ``overwrite`` one holding only a previous
    explanation: replaced whole) and return them with the side and consistency check."""

    options = options or ExplainOptions()
    check_output_dir(out, ATTRIBUTION_FILES, overwrite=overwrite)
    _stage(progress, cancel, "read", "reading the input")
    study = load_study(list(inputs))
    grid, mapping = study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
    _stage(progress, cancel, "explain", "explaining (3D LIME)")
    found = _explain_on_grid(model, grid, mapping, text, span, options, progress, cancel)
    _stage(progress, cancel, "anatomy", "naming places (the scan registered to the MNI152 atlas)")
    placement = place_study(study.channel(0))
    _stage(progress, cancel, "write", "writing the attribution files")
    side, _volume = _evidence(found, mapping, placement)
    target = text if span is None else text[span[0] : span[1]]
    with replace_dir(out, ATTRIBUTION_FILES, overwrite=overwrite) as tmp:
        written = write_attribution(
            found, mapping, tmp, top_k=options.top_k, midline_x=side["midline_ras_x"], placement=placement
        )
    return {
        "explanation": found.summary() | {"segments": written["segments"]},
        "attribution": side,
        # The explained text's warnings against this explanation's evidence, as its report value states them.
        "warnings": []
        if span is not None
        else build_report(target, model={}, input={}, timings={}, attribution_side=side).warnings_of(
            "side", "lobe", "diffuse"
        ),
        "files": {
            "attribution": str(Path(out) / "attribution.nii.gz"),
            "segmentation": str(Path(out) / "attribution.seg.nrrd"),
        },
    }
