"""Key images in radiological convention for any file orientation, and the report PDF (draft and final)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.volume import Volume
from BrainGemma3DLib.reporting.keyimages import default_point, key_images
from BrainGemma3DLib.reporting.pdf import SIGNATURE_BOX, build_pdf, load_bundle, read_bundle
from BrainGemma3DLib.reporting.report import NOTICE, Report, build_report

#: A bright blob on the patient's LEFT (RAS x < 0), ANTERIOR (y > 0) and SUPERIOR (z > 0): one blob checks
#: both image axes of every view.
BLOB = np.array([-22.0, 20.0, 16.0])
SHAPE = (40, 48, 36)
SPACING = 3.5


def _rot_z(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def synthetic(kind: str) -> tuple[Volume, Volume]:
    """A head with the blob and a Gaussian attribution on it, sampled through a RAS, LPS or oblique affine."""
    signs = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "oblique": (1, 1, 1)}[kind]
    linear = (_rot_z(20.0) if kind == "oblique" else np.eye(3)) @ np.diag(np.asarray(signs) * SPACING)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.asarray(SHAPE) - 1) / 2.0)
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in SHAPE], indexing="ij"), axis=-1)
    world = idx @ linear.T + affine[:3, 3]
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    head = (x / 55) ** 2 + (y / 68) ** 2 + (z / 50) ** 2 < 1
    image = np.where(head, 100 + 10 * np.sin(y / 7.0), 0.0)
    distance2 = ((world - BLOB) ** 2).sum(axis=-1)
    image = np.where(distance2 < 10.0**2, 400.0, image).astype(np.float32)
    attribution = np.exp(-distance2 / (2 * 8.0**2)).astype(np.float32)
    return Volume(image[None], affine), Volume(attribution[None], affine)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert rows.size > 20, "blob not visible in the view"
    return float(rows.mean()), float(cols.mean())


def _white(rgb: np.ndarray) -> np.ndarray:
    return (rgb > 200).all(axis=-1)  # the blob; orientation letters are yellow (blue channel 120)


def _warm(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 120) & (r - b > 80) & (r - g > 40)  # the overlay's red-orange; letters have r - g = 15


@pytest.mark.parametrize("kind", ["RAS", "LPS", "oblique"])
def test_key_images_follow_radiological_convention(kind):
    volume, _ = synthetic(kind)
    images = key_images(volume, None, BLOB, size_px=200)
    assert set(images) == {"axial", "coronal", "sagittal"}
    half = 100
    # Axial: patient's LEFT on the image's RIGHT, anterior at the top.
    row, col = _centroid(_white(_pixels(images["axial"])))
    assert col > half + 15 and row < half - 15, (kind, row, col)
    # Coronal: patient's LEFT on the image's RIGHT, superior at the top.
    row, col = _centroid(_white(_pixels(images["coronal"])))
    assert col > half + 15 and row < half - 15, (kind, row, col)
    # Sagittal: anterior on the LEFT, superior at the top.
    row, col = _centroid(_white(_pixels(images["sagittal"])))
    assert col < half - 15 and row < half - 15, (kind, row, col)
    assert all(_pixels(png).shape == (200, 200, 3) for png in images.values())


@pytest.mark.parametrize("kind", ["RAS", "oblique"])
def test_default_point_is_the_attribution_peak_and_the_overlay_sits_on_it(kind):
    volume, attribution = synthetic(kind)
    point = default_point(volume, attribution)
    assert np.linalg.norm(point - BLOB) < SPACING  # the voxel nearest the Gaussian's centre
    images = key_images(volume, attribution, size_px=200)
    assert images == key_images(volume, attribution, point, size_px=200)
    row, col = _centroid(_warm(_pixels(images["axial"])))
    assert col > 115 and row < 85
    row, col = _centroid(_warm(_pixels(images["sagittal"])))
    assert col < 85 and row < 85


def test_without_attribution_the_slices_cross_the_head_centre_and_nothing_is_overlaid():
    volume, attribution = synthetic("LPS")
    assert np.linalg.norm(default_point(volume, None)) < 5.0
    flat = Volume(np.zeros_like(attribution.data), attribution.affine)  # no positive evidence: same as none
    assert np.allclose(default_point(volume, flat), default_point(volume, None))
    for png in key_images(volume, flat, size_px=120).values():
        assert not _warm(_pixels(png)).any()


# --- PDF ----------------------------------------------------------------------------------------------------

AI_TEXT = (
    "Findings: A heterogeneous mass in the left frontal lobe with surrounding edema and ring enhancement. "
    "No necrosis.\nImpression: Left frontal lesion, likely a high-grade glioma."
)
SIDE_RIGHT = {
    "side": "right",
    "left_fraction": 0.15,
    "right_fraction": 0.85,
    "lateralisation": -0.7,
    "peak_ras": [22.0, 20.0, 16.0],
    "midline_ras_x": 0.0,
}


def sample_report(text: str = AI_TEXT) -> Report:
    return build_report(
        text,
        model={"name": "BrainGemma3D demo", "preset": "demo", "checkpoint_sha256": "ab" * 32},
        input={
            "paths": ["/data/case/flair.nii.gz"],
            "sha256": ["cd" * 32],
            "shape": list(SHAPE),
            "spacing_mm": [SPACING] * 3,
            "orientation": "RAS",
        },
        timings={"read_s": 0.1},
        attribution_side=SIDE_RIGHT,
        created="2026-01-02T03:04:05Z",
    )


@pytest.fixture(scope="module")
def images():
    volume, attribution = synthetic("RAS")
    return key_images(volume, attribution, size_px=160)


def pdf_text(path) -> tuple[int, str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return len(pdf), "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()


def test_draft_pdf_has_watermark_notice_text_and_no_invented_fields(tmp_path, images):
    report = sample_report()
    out = build_pdf(report, images, tmp_path / "new" / "report.pdf")
    assert out == tmp_path / "new" / "report.pdf"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.pdf"]  # no temporary left behind
    pages, text = pdf_text(out)
    assert pages >= 1
    assert "DRAFT" in text and NOTICE in text and "Brain MRI — AI report draft" in text
    assert "heterogeneous mass in the left frontal lobe" in text and "likely a high-grade glioma" in text
    assert "Left/right conflict" in text  # the warning box: text says left, evidence is on the right
    assert "ab" * 32 in text and "cd" * 32 in text
    for label in ("Institution", "Patient name", "Patient ID", "Study date", "Accession"):
        assert label not in text


def test_header_fields_appear_only_when_given(tmp_path, images):
    fields = {"patient_name": "Doe^Jane", "patient_id": "P-0001", "accession": ""}
    _pages, text = pdf_text(build_pdf(sample_report(), images, tmp_path / "r.pdf", fields=fields))
    assert "Patient name" in text and "Doe^Jane" in text and "P-0001" in text
    assert "Institution" not in text and "Accession" not in text and "Study date" not in text


def test_final_pdf_has_no_watermark_but_keeps_the_ai_notice(tmp_path, images):
    report = sample_report().signed_by("Dr Jane Roe", "2026-01-03T10:00:00Z")
    assert report.status == "signed"
    _pages, text = pdf_text(build_pdf(report, images, tmp_path / "final.pdf", draft=False))
    assert "DRAFT" not in text
    assert "AI-assisted report, reviewed and signed by Dr Jane Roe" in text and NOTICE in text


def test_first_page_renders_with_content(tmp_path, images):
    import pypdfium2 as pdfium

    path = build_pdf(sample_report(), images, tmp_path / "r.pdf")
    pdf = pdfium.PdfDocument(str(path))
    try:
        page = np.asarray(pdf[0].render(scale=0.5).to_pil().convert("RGB")).astype(np.int32)
        width, height = pdf[0].get_size()
    finally:
        pdf.close()
    assert (page.min(axis=-1) < 200).mean() > 0.05  # text, tables and images, not a blank page
    assert (width, height) == pytest.approx((595.3, 841.9), abs=1)
    x1, y1, x2, y2 = SIGNATURE_BOX
    assert 0 < x1 < x2 < width and 0 < y1 < y2 < height / 4


def test_bundle_round_trip(tmp_path, images):
    report = sample_report()
    path = build_pdf(report, images, tmp_path / "r.pdf", fields={"patient_id": "P-0001"})
    got_report, got_images = read_bundle(path)
    assert got_report == report
    assert got_images == images
    bundle = load_bundle(path)
    assert bundle.draft and bundle.fields == {"patient_id": "P-0001"}


def test_edited_text_replaces_the_draft_and_rederives_entities_and_warnings(tmp_path, images):
    edited = "Findings: A mass in the right frontal lobe with edema.\nImpression: Right frontal lesion."
    report = sample_report()
    assert any("Left/right conflict" in w for w in report.warning_texts)
    again = report.with_text(edited)
    assert again.entities["laterality"] == "right" and again.edited is True
    assert not any("Left/right conflict" in w for w in again.warning_texts)  # the edit fixed the side
    assert again.ai_draft_text == AI_TEXT and report.text == AI_TEXT  # the input is not modified
    _pages, text = pdf_text(build_pdf(again, images, tmp_path / "r.pdf"))
    assert "A mass in the right frontal lobe" in text and "heterogeneous" not in text


def test_anything_but_a_report_pdf_is_one_clear_input_error(tmp_path, images):
    from reportlab.pdfgen import canvas

    good = build_pdf(sample_report(), images, tmp_path / "good.pdf").read_bytes()
    cases = {
        "text.pdf": b"hello, not a PDF",
        "truncated.pdf": good[: len(good) // 2],
        "empty.pdf": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    other = canvas.Canvas(str(tmp_path / "other.pdf"))
    other.drawString(100, 700, "some other PDF")
    other.save()
    for name in [*cases, "other.pdf"]:
        with pytest.raises(InputError, match="not a BrainGemma3D report PDF or it is corrupted") as info:
            read_bundle(tmp_path / name)
        assert info.value.path == str(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        read_bundle(tmp_path / "missing.pdf")
