"""The Slicer-only helpers of the BrainGemma3D module, kept out of ``BrainGemma3D.py`` so that it stays thin.

``BrainGemma3DLib`` (the library) runs without Slicer and holds everything that computes; this package holds
what needs the Slicer application itself: installing the Python dependencies into Slicer's Python
(``dependencies``), running the library's worker process from the Qt event loop (``worker``), and the
settings and terms dialog (``settings``). The panel's pieces are here too: labels, paths and dialogs
(``panel``), the widget's handlers as mixins (``generating``: Generate, Cancel, explain a sentence;
``review``: the report text box and its entities and warnings; ``overlay``: the attribution overlay
controls; ``export``: Sign & export and Export DICOM; ``worklist``: a cohort annotated case after case)
and the logic's scene half (``results``). Like the module file, these import only what Slicer ships at file
scope, so Slicer can load the module before torch or transformers are installed.
"""
