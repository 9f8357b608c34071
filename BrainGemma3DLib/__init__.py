"""BrainGemma3D library: 3D brain MRI in, structured radiology report draft out.

The library never imports Qt or CTK, and imports ``slicer`` only in its ``scene`` module, so that every part
below the Slicer panel can be used (and tested) from plain Python.
"""

import os
import sys


def _inside_slicer_application() -> bool:
    """True in 3D Slicer's own process (``slicer.app`` exists), whose environment other extensions share."""
    return getattr(sys.modules.get("slicer"), "app", None) is not None


# Weights and data are never downloaded at run time: everything loads from local folders (the loaders also
# pass local_files_only=True). Inside the Slicer application the library only does scene, report and signing
# work, so it leaves Slicer's environment to other extensions; the model runs in the worker process, which
# the module starts with HF_HUB_OFFLINE=1 and where this import sets it as everywhere else.
if not _inside_slicer_application():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
