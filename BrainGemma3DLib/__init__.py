"""BrainGemma3D library: 3D brain MRI in, structured radiology report draft out.

The library never imports Qt or CTK, and imports ``slicer`` only in its ``scene`` module, so that every part
below the Slicer panel can be used (and tested) from plain Python.
"""

import os

# Weights and data are never downloaded at run time: everything loads from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
