"""Synthetic BraTS-like brain MRI cases ("phantoms") with reports and ground truth, built offline.

See :mod:`.dataset` for the folder layout, :mod:`.anatomy` for the template and atlas sources,
:mod:`.lesion` for the tumour model and :mod:`.reports` for the TextBraTS-style report writer.
"""

from .dataset import BRATS_DIR, HEALTHY_DIR, TEXT_DIR, Case, case_id, generate, make_case, write_case

__all__ = ["BRATS_DIR", "HEALTHY_DIR", "TEXT_DIR", "Case", "case_id", "generate", "make_case", "write_case"]
