"""Which Slicer the module runs in: refuse an older one on load, with one clear line.

Why: Slicer 5.8 and older ship Python 3.9. The module file loads there, but the library needs Python >= 3.10
(``zip(strict=)``, ``X | Y`` in ``isinstance``) and would fail only when the radiologist presses Generate.
"""

import sys

from .i18n import _

#: Slicer 5.10 is the first to ship Python 3.10.
MINIMUM_PYTHON = (3, 10)


def unsupportedSlicerMessage(versionInfo=None):
    """One line saying why this Slicer cannot run BrainGemma3D, or ``None`` when it can."""
    version = tuple((versionInfo or sys.version_info)[:3])
    if version[:2] >= MINIMUM_PYTHON:
        return None
    return _(
        "BrainGemma3D needs 3D Slicer 5.10 or newer (Python 3.10+); this Slicer runs Python {version}, "
        "so the module is disabled. Install a current Slicer to use it."
    ).format(version=".".join(str(part) for part in version))
