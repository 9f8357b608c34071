"""DICOM results: a report leaves as first-class DICOM objects (SR, SEG, Encapsulated PDF) and travels to and
from a PACS (DIMSE and DICOMweb). See ``docs/design.md`` ("DICOM and PACS")."""


def require_dicom_packages() -> None:
    """One clear line when the ``dicom`` extra is not installed, instead of an ImportError deep inside."""
    import importlib.util

    from ..io.errors import InputError

    missing = [
        m
        for m in ("pydicom", "highdicom", "pynetdicom", "dicomweb_client")
        if not importlib.util.find_spec(m)
    ]
    if missing:
        raise InputError(
            f"DICOM export and PACS need {', '.join(missing)}: pip install 'braingemma3d[dicom]'"
        )
