"""The README's PACS pictures, made from the sample case: the SR's content tree and the SEG over the image.

The sample case is re-stored as a DICOM series (the tests' writer), reported with ``--explain``, exported with
``braingemma3d dicom``; then the SR is dumped with dcmtk's ``dsrdump`` (text) and the SEG is read back with
highdicom and drawn over the source frame where its first segment is largest, each pixel placed through the
SEG's own geometry (what a DICOM viewer does). Reproduce::

    .venv/bin/python tools/dicom_pictures.py --out docs/images

Writes OUT/sr-tree.txt and OUT/seg-over-flair.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO)]


def _run(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "BrainGemma3DLib", *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)


def seg_overlay(seg_path: Path, series: Path, out: Path) -> None:
    """The SEG's first segment over its source frame, in the SEG's colour, at 2x."""
    import pydicom
    from PIL import Image

    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    shared = seg.SharedFunctionalGroupsSequence[0]
    best, best_count = 0, -1
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        holder = item if "SegmentIdentificationSequence" in item else shared
        if (
            int(holder.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 1
            and frames[i].sum() > best_count
        ):
            best, best_count = i, int(frames[i].sum())
    source_uid = seg.PerFrameFunctionalGroupsSequence[best].DerivationImageSequence[0].SourceImageSequence[0]
    wanted = str(source_uid.ReferencedSOPInstanceUID)
    image = next(
        ds for ds in (pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))) if ds.SOPInstanceUID == wanted
    )
    pixels = image.pixel_array.astype(float)
    lo, hi = np.percentile(pixels[pixels > 0], [1, 99.5]) if (pixels > 0).any() else (0, 1)
    grey = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    from highdicom.color import CIELabColor

    lab = seg.SegmentSequence[0].RecommendedDisplayCIELabValue
    colour = np.asarray(CIELabColor.from_dicom_value(lab).to_rgb(), dtype=float) / 255.0
    mask = frames[best] > 0
    rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    # Radiological convention, as a reading room shows an axial slice: the patient's right on the left of the
    # picture (columns toward the patient's left, +x in LPS) and anterior at the top (rows toward posterior).
    orientation = np.asarray(image.ImageOrientationPatient, dtype=float)
    if orientation[0] < 0:
        rgb = rgb[:, ::-1]
    if orientation[4] < 0:
        rgb = rgb[::-1]
    picture = Image.fromarray(np.ascontiguousarray((rgb * 255).astype(np.uint8)))
    picture = picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST)
    picture.save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    from helpers import sample_as_dicom

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = sample_as_dicom(tmp / "series")
        _run("report", str(series), "--out", str(tmp / "report"), "--explain", "--quiet")
        _run("dicom", str(tmp / "report"), "--out", str(tmp / "objects"))
        dump = subprocess.run(
            [shutil.which("dsrdump") or "dsrdump", "+Pl", "-Ph", str(tmp / "objects" / "report-sr.dcm")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (args.out / "sr-tree.txt").write_text(dump, encoding="utf-8")
        seg_overlay(tmp / "objects" / "evidence-seg.dcm", series, args.out / "seg-over-flair.png")
    print(f"wrote {args.out / 'sr-tree.txt'} and {args.out / 'seg-over-flair.png'}")


if __name__ == "__main__":
    main()
