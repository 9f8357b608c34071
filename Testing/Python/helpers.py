"""Test helpers: synthetic heads with a known LEFT-sided blob written the way other tools write files, the
bundled sample case, and running the command line as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]
#: The bundled sample case's FLAIR (a synthetic phantom, right-sided lesion).
SAMPLE = (
    REPO
    / "Resources/Samples/BrainGemma3DPhantom/MICCAI_BraTS2020_TrainingData/BrainGemma3DPhantom_001"
    / "BrainGemma3DPhantom_001_flair.nii.gz"
)
DEMO_WEIGHTS = REPO / "Resources/DemoWeights"
#: Centre of the blob in RAS millimetres: x < 0 is the patient's LEFT.
BLOB_RAS = np.array([-35.0, 15.0, 10.0])
BLOB_RADIUS = 18.0


def head_intensity(world: np.ndarray) -> np.ndarray:
    """An analytic head (ellipsoid, smooth texture) and a bright blob on the patient's left."""
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    inside = (x / 70) ** 2 + (y / 90) ** 2 + (z / 65) ** 2 < 1
    texture = 100 + 15 * np.sin(y / 9.0) * np.cos(z / 11.0)
    img = np.where(inside, texture, 0.0)
    blob = np.sum((world - BLOB_RAS) ** 2, axis=-1) < BLOB_RADIUS**2
    return np.where(blob & inside, 300.0, img).astype(np.float32)


def rotation(axis, degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def variant_affine(name: str, spacing=(1.5, 1.5, 1.5)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel-to-RAS affine and shape covering the head, for an orientation variant."""
    sp = np.asarray(spacing, dtype=np.float64)
    half = np.array([80.0, 100.0, 75.0])
    shape = tuple(int(np.ceil(2 * h / s)) + 1 for h, s in zip(half, sp, strict=True))
    signs = {"RAS": (1, 1, 1), "LAS": (-1, 1, 1), "LPS": (-1, -1, 1), "oblique": (1, 1, 1)}[name]
    rot = rotation([0.3, 0.2, 1.0], 15.0) if name == "oblique" else np.eye(3)
    linear = rot @ np.diag(np.asarray(signs) * sp)
    affine = np.eye(4)
    affine[:3, :3] = linear
    centre_index = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = -linear @ centre_index
    return affine, shape  # type: ignore[return-value]


def sample_head(affine: np.ndarray, shape) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    world = idx @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    return head_intensity(world)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def sitk_image(data: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def write_nrrd(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(data, affine), str(path), useCompression=True)
    return path


def write_dicom_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    series_uid: str = "1.2.3.4.5.6.1",
    description: str = "AX FLAIR",
    prefix: str = "slice",
    extra_tags: dict[str, str] | None = None,
) -> Path:
    """A DICOM MR series written slice by slice with SimpleITK, geometry in the standard tags;
    ``extra_tags`` (DICOM "gggg|eeee" -> value) go on every slice and win over the defaults. GDCM switches
    the C locale while writing; it is put back, so that module-scoped fixtures (outside the per-test locale
    guard in conftest) leave no ASCII default behind for later tests."""
    import locale

    before = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(folder, data, affine, series_uid, description, prefix, extra_tags)
    finally:
        locale.setlocale(locale.LC_ALL, before)


def _write_dicom_series(folder, data, affine, series_uid, description, prefix, extra_tags) -> Path:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    img = sitk_image(np.clip(data, -32768, 32767).astype(np.int16), affine)
    d = img.GetDirection()
    orientation = "\\".join(f"{v:.8f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        position = "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
            ("0008|0018", f"{series_uid}.{k + 1}"),
            ("0020|000d", "1.2.3.4.5.6"),
            ("0020|000e", series_uid),
            ("0008|103e", description),
            ("0010|0010", "Phantom^Test"),
            ("0020|0037", orientation),
            ("0020|0032", position),
            ("0020|0013", str(k + 1)),
            ("0018|0050", f"{img.GetSpacing()[2]:.6f}"),
            *(extra_tags or {}).items(),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


def run_cli(
    *args: str, fresh: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m BrainGemma3DLib ARGS`` as a user would, offline: its own process, exit code, stdout
    and stderr, in the environment ``env`` (default: this one). By default the process is forked from a
    parent that has already imported the libraries (``cli_zygote.py``: 5-10 s saved per run);
    ``fresh=True`` (or ``BG3D_TEST_FRESH_CLI=1`` for the whole run) starts a new interpreter, for the checks
    that include what importing prints."""
    env = {**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1"}
    if not fresh and not os.environ.get("BG3D_TEST_FRESH_CLI") and _ZYGOTE_LOCK.acquire(blocking=False):
        try:
            return _zygote().run(list(args), env)
        finally:
            _ZYGOTE_LOCK.release()
    return subprocess.run([sys.executable, "-m", "BrainGemma3DLib", *args], capture_output=True, text=True,
                          env=env)  # fmt: skip


class _Zygote:
    """The test process's ``cli_zygote.py`` (started on first use, ended with the test process)."""

    def __init__(self) -> None:
        import atexit

        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_zygote.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=REPO,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        atexit.register(self.close)
        self.ready = False
        self.owner = os.getpid()

    def run(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        import json
        import tempfile

        if not self.ready:
            started = self.process.stdout.readline()
            if not started:
                raise RuntimeError("the command-line zygote (Testing/Python/cli_zygote.py) did not start")
            self.ready = True
        with tempfile.TemporaryDirectory(prefix="bg3d-cli-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch(), err.touch()
            request = {"args": args, "env": env, "cwd": os.getcwd(), "out": str(out), "err": str(err)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            if not answer:
                raise RuntimeError("the command-line zygote (Testing/Python/cli_zygote.py) ended")
            code = json.loads(answer)["code"]
            return subprocess.CompletedProcess(
                [sys.executable, "-m", "BrainGemma3DLib", *args],
                code,
                out.read_text(encoding="utf-8", errors="replace"),
                err.read_text(encoding="utf-8", errors="replace"),
            )

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


_ZYGOTE_LOCK = threading.Lock()
_ZYGOTE: list[_Zygote] = []


def _zygote() -> _Zygote:
    """This process's zygote; a new one after a fork (an xdist worker, a test's own child)."""
    if not _ZYGOTE or _ZYGOTE[0].owner != os.getpid() or _ZYGOTE[0].process.poll() is not None:
        _ZYGOTE[:] = [_Zygote()]
    return _ZYGOTE[0]


def start_cli_zygote() -> None:
    """Start importing in the background now, so that the first command line run does not wait for it."""
    with _ZYGOTE_LOCK:
        _zygote()


def system_tool(name: str) -> str:
    """The path of a system program a test needs (dciodvfy, Orthanc...): skip without it, except under CI
    (``CI=true``), where ``.ci/run`` installs it and a missing one is a failure."""
    import shutil

    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")  # Orthanc: sbin
    if not found:
        missing_in_ci(f"{name} is not installed (Debian: see .ci/run)")
    return found


def missing_in_ci(reason: str) -> None:
    """Skip a test for something the system lacks, but fail under CI, where ``.ci/run`` installs it."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}, under CI: .ci/run installs it (apt-get)")
    pytest.skip(f"{reason}; this check runs in CI")


#: Identity of the test DICOM studies: what a PACS series carries and report.json / the objects must keep.
DICOM_IDENTITY = {
    "0010|0010": "Phantom^Test",
    "0010|0020": "BG3D-0001",
    "0010|0030": "19700101",
    "0010|0040": "F",
    "0008|0020": "20261130",
    "0008|0030": "101500",
    "0008|0050": "ACC123",
    "0008|0090": "Referrer^Rita",
    "0008|1030": "MRI brain",
    "0020|0010": "1",
    "0020|0052": "1.2.3.4.5.6.9",
}


def sample_as_dicom(folder: Path, variant: str = "sample", series_uid: str = "1.2.3.4.5.6.1") -> Path:
    """The bundled sample case re-stored as a DICOM MR series with a patient and a study: as stored
    (``sample``), or resampled to an LPS axial, an oblique or a thick-slice (5 mm) grid."""
    from BrainGemma3DLib.io.volume import load_volume

    volume = load_volume(SAMPLE)
    if variant != "sample":
        spacing = (1.5, 1.5, 5.0) if variant == "thick" else (1.5, 1.5, 1.5)
        affine, shape = variant_affine({"lps": "LPS", "oblique": "oblique", "thick": "RAS"}[variant], spacing)
        volume = volume.resample_to(affine, shape)
    return write_dicom_series(
        folder, volume.data[0], volume.affine, series_uid=series_uid, extra_tags=DICOM_IDENTITY
    )
