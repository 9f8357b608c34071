"""DICOM results: a report leaves as first-class DICOM objects (SR, SEG, Encapsulated PDF) and travels to and
from a PACS (DIMSE and DICOMweb). See ``docs/design.md`` ("DICOM results and PACS")."""


def require_dicom_packages(network: bool = False) -> None:
    """One clear line when a package is missing (``send``/``fetch`` need the ``dicom`` extra), instead of an
    ImportError deep inside."""
    import importlib.util

    from ..io.errors import InputError

    wanted = ("pydicom", "highdicom", *(("pynetdicom", "dicomweb_client") if network else ()))
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"this needs {', '.join(missing)}: pip install 'braingemma3d[dicom]'")
