"""The worker requests the panel sends (``load``, ``report``, ``explain``), built from scene nodes.

The worker's protocol is documented in ``BrainGemma3DLib.app.engine``; this is the one place that writes it
for the Slicer side, so Generate and "Explain this sentence" cannot drift apart.
"""

import pathlib
import re
import tempfile

from .i18n import _

#: Segments the worker writes; the top-k spin box shows the best k of them without asking the worker again.
ATTRIBUTION_SEGMENTS = 50
ROLES = ("input", "t1ce", "t2")
TUMOUR_LABELS = "tumour-labels.nrrd"


def writeInputs(volumeNodes, cacheFolder, progress, tumourSegmentation=None):
    """Write the volumes (FLAIR, T1ce, T2; ``None`` skipped) into a new case folder; (folder, paths).

    A tumour segmentation, when given, is written beside them as BraTS labels on the FLAIR's grid
    (``inputs/tumour-labels.nrrd``), where :func:`reportRequest` finds it."""
    from BrainGemma3DLib.slicer import scene

    case = pathlib.Path(tempfile.mkdtemp(prefix="case-", dir=cacheFolder))
    progress("inputs", 0.0, _("Writing the input volumes for the worker"))
    inputs = []
    for role, node in zip(ROLES, volumeNodes, strict=False):
        if node is not None:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.GetName() or role).strip("._") or role
            inputs.append(str(scene.volume_node_to_file(node, case / "inputs" / f"{role}-{safe}.nrrd")))
    if tumourSegmentation is not None:
        scene.tumour_labels_to_file(tumourSegmentation, volumeNodes[0], case / "inputs" / TUMOUR_LABELS)
    return case, inputs


def loadRequest(model="demo", device="auto", quantize=None, vision=None, lm=None):
    """Load (or keep) the model: the first request of every job, so a restarted worker loads it again."""
    load = {"cmd": "load", "model": str(model), "device": str(device)}
    for key, value in (("quantize", quantize), ("vision", vision), ("lm", lm)):
        if value:
            load[key] = str(value)
    return load


def explainOptions(options):
    """The explanation options the panel asks for (its number of overlay segments, then the caller's), the
    same for a local run and a run on a node."""
    return {"top_k": ATTRIBUTION_SEGMENTS, **dict(options or {})}


def reportRequest(case, inputs, *, explain, options, fields):
    """The whole report into ``case/report``; ``fields``: the patient's and study's identity (may be {})."""
    labels = pathlib.Path(case) / "inputs" / TUMOUR_LABELS
    return {
        "cmd": "report",
        "inputs": inputs,
        "out": str(pathlib.Path(case) / "report"),
        "explain": bool(explain),
        "options": explainOptions(options),
        "fields": dict(fields or {}),
        **({"seg": str(labels)} if labels.is_file() else {}),
    }


def explainRequest(case, inputs, text, span):
    """Explain one statement, ``text[span[0]:span[1]]``, of a (possibly edited) report (``case/evidence``)."""
    return {
        "cmd": "explain",
        "inputs": inputs,
        "out": str(pathlib.Path(case) / "evidence"),
        "text": text,
        "span": [int(span[0]), int(span[1])],
        "options": {"top_k": ATTRIBUTION_SEGMENTS},
    }
