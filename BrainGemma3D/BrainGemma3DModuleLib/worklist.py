"""The Worklist section: a research team annotates a cohort in the panel, one case after another.

A mixin of ``BrainGemma3DWidget``, kept here so that the module file stays thin. The cohort, its cases, their
statuses, the order and the records are the library's (``BrainGemma3DLib.cohort.annotations.Worklist``); this
file only moves them between the table, the scene and the rest of the panel. Opening a case loads its
sequences and its BraTS segmentation into a clean scene (the previous case's nodes are removed) and shows the
``batch`` draft with its overlay, measured facts and warnings, or drafts the case through Generate as the
button does. "Save and next" writes the reader's annotation (``Worklist.save``: a research record, not a
signature) and opens the next case this reader has not done, so reopening the worklist after closing Slicer
continues there. The reader's name is asked once per session (:func:`askReader`; the tests stand it in).

The readers' view under it ("Compare readers") shows what the library's ``agreement --annotations`` computes
for the open cohort (``BrainGemma3DLib.cohort.agreement.compare_readers``: per statement the share of
agreement and Cohen's kappa, the cases where readers disagree); selecting such a case shows each reader's
differing statements and text side by side, and "Adjudicate" saves the report editor's text of that (open)
case as the adjudicated record (``Worklist.adjudicate``: reader "adjudicated by NAME", which ``curate``
prefers). Nothing is computed here.
"""

import html
import json
import pathlib

import qt
import slicer

from . import panel, settings
from .i18n import _
from .results import REPORT_JSON_ATTRIBUTE
from .settings import pathOrNone

#: The reader's name of the last session: offered when the name is asked (never used without asking).
READER_SETTINGS_KEY = "BrainGemma3D/worklistReader"
#: The keyboard shortcut of "Save and next", anywhere in the panel.
SAVE_AND_NEXT_KEYS = "Ctrl+Return"
#: The parameter node's references to the open case's nodes, emptied before those nodes are removed.
CASE_FIELDS = ("reportTextNode", "attributionSegmentation", "inputVolume", "t1ceVolume", "t2Volume",
               "tumourSegmentation")  # fmt: skip


def askReader(suggested: str = "") -> str | None:
    """Who annotates (their name names their folder of records); None when cancelled."""
    name = qt.QInputDialog.getText(
        slicer.util.mainWindow(),
        _("Worklist reader"),
        _("Your reader name (letters, digits and . _ -); your annotations are kept under it:"),
        qt.QLineEdit.Normal,
        suggested,
    )
    return (name or "").strip() or None


def askSkipReason(caseId: str) -> str | None:
    """Why ``caseId`` is skipped, in one line; None when cancelled."""
    reason = qt.QInputDialog.getText(
        slicer.util.mainWindow(),
        _("Skip case"),
        _("Why is {case} skipped? (one line, kept in your record)").format(case=caseId),
    )
    return " ".join((reason or "").split()) or None


def askManifest(folder) -> str | None:
    """A CSV manifest chosen in a file dialog; None when cancelled."""
    path = qt.QFileDialog.getOpenFileName(
        slicer.util.mainWindow(), _("CSV manifest"), str(folder), _("CSV manifest (*.csv)")
    )
    return path or None


def modelSequences(parameterNode) -> int:
    """How many sequences the selected model reads: its ``braingemma3d_config.json`` says; 1 (FLAIR) when it
    does not, as for the published model, and always on a node (which drafts from the FLAIR alone). A case's
    T1ce and T2 go to the model only when it reads three; they are loaded for the reader either way."""
    if parameterNode.runOn.value == "node":
        return 1
    if parameterNode.modelSource.value == "checkpoint":
        folder = pathOrNone(parameterNode.checkpointFolder)
    else:
        from .worker import libraryRoot

        folder = pathlib.Path(libraryRoot()) / "Resources" / "DemoWeights"
    try:
        config = json.loads((folder / "braingemma3d_config.json").read_text(encoding="utf-8"))
        return int(config.get("in_channels", 1))
    except (OSError, TypeError, ValueError, AttributeError):
        return 1


def draftResult(folder) -> dict:
    """A ``batch`` draft folder (report.json, report.pdf, attribution.seg.nrrd with --explain) in the shape of
    the worker's result event, so that it is shown exactly as a draft made in the panel."""
    folder = pathlib.Path(folder)
    files = {key: str(folder / name) for key, name in (("json", "report.json"), ("text", "report.txt"),
                                                       ("pdf", "report.pdf"))}  # fmt: skip
    if (folder / "attribution.seg.nrrd").is_file():
        files["segmentation"] = str(folder / "attribution.seg.nrrd")
    return {"report": json.loads((folder / "report.json").read_text(encoding="utf-8")), "files": files}


def statusText(case) -> str:
    """A case's status for the table, in the panel's language."""
    if case.problem:
        return _("cannot be annotated")
    labels = {
        "to do": _("to do"),
        "drafted": _("drafted"),
        "annotated by me": _("annotated by me"),
        "annotated by others": _("annotated by others"),
        "skipped": _("skipped"),
    }
    text = labels.get(case.status, case.status)
    if case.status == "skipped" and case.reason:
        text = _("skipped ({reason})").format(reason=case.reason)
    if case.adjudicated_by:
        text += " " + _("(adjudicated)")
    return text


def caseToolTip(case) -> str:
    """What a row's tooltip says: why a case cannot be annotated, or who annotated it."""
    if case.problem:
        return case.problem
    if case.readers:
        return _("Annotated by: {readers}").format(readers=", ".join(case.readers))
    return _("Not annotated yet.")


def progressText(progress) -> str:
    """The progress line: "12 of 60 annotated, 3 skipped" (this reader's)."""
    return _("{annotated} of {total} annotated, {skipped} skipped").format(
        annotated=progress.annotated, total=progress.total, skipped=progress.skipped
    )


def agreementRows(result) -> list[tuple[str, str, str, str]]:
    """The readers' agreement table: (pair, statement, share, kappa) per statement of each pair with common
    cases, from the library's ``compare_readers`` figures (kappa "n/a" where it is undefined)."""
    rows = []
    for name, pair in result["pairs"].items():
        for statement, row in (pair.get("statements") or {}).items():
            kappa = _("n/a") if row["kappa"] is None else f"{row['kappa']:.2f}"
            rows.append((name, statement, f"{row['agreement']:.0%}", kappa))
    return rows


def differencesText(case) -> str:
    """One disagreement's statements: "side (ann: right, ben: left); edema (ann: yes, ben: no)"."""
    return "; ".join(
        "{statement} ({values})".format(
            statement=statement, values=", ".join(f"{reader}: {value}" for reader, value in values.items())
        )
        for statement, values in case["differences"].items()
    )


def comparisonHtml(case) -> str:
    """One disagreement side by side: a column per reader, the differing statements, then each text."""
    readers = list(case["texts"])
    cell = '<td valign="top">{}</td>'.format
    lines = ['<table width="100%" border="1" cellspacing="0" cellpadding="4">',
             "<tr><th></th>" + "".join(f"<th>{html.escape(r)}</th>" for r in readers) + "</tr>"]  # fmt: skip
    for statement, values in case["differences"].items():
        shown = "".join(cell(f"<b>{html.escape(str(values.get(r, '')))}</b>") for r in readers)
        lines.append(f"<tr>{cell(html.escape(statement))}{shown}</tr>")
    texts = "".join(cell(html.escape(case["texts"][r]).replace("\n", "<br>")) for r in readers)
    lines += [f"<tr>{cell(html.escape(_('text')))}{texts}</tr>", "</table>"]
    return "\n".join(lines)


class WorklistPanel:
    """The Worklist section of the panel; mixed into the widget."""

    _worklist = None  # the library's Worklist once opened
    _worklistReader = None  # asked once per session
    _worklistCase = None  # the open case's id
    _worklistRows = ()  # case ids in table order
    _worklistKnownNodes = None  # the scene's node IDs before the open case was loaded
    _readersResult = None  # the library's comparison of the readers (compare_readers), once asked
    _disagreementRows = ()  # case ids of the disagreements table, in its order

    # --- Setting up ---------------------------------------------------------------------------------------
    def _setupWorklist(self) -> None:
        """Connect the section's buttons and its shortcut (called once from ``setup``)."""
        self.ui.openWorklistButton.connect("clicked(bool)", self.onOpenWorklistButton)
        self.ui.worklistManifestButton.connect("clicked(bool)", self.onWorklistManifestButton)
        self.ui.worklistReaderButton.connect("clicked(bool)", self.onWorklistReaderButton)
        self.ui.openCaseButton.connect("clicked(bool)", self.onOpenCaseButton)
        self.ui.previousCaseButton.connect("clicked(bool)", self.onPreviousCaseButton)
        self.ui.skipCaseButton.connect("clicked(bool)", self.onSkipCaseButton)
        self.ui.saveAndNextButton.connect("clicked(bool)", self.onSaveAndNextButton)
        self.ui.worklistTableWidget.connect("cellDoubleClicked(int,int)", self.onWorklistCellDoubleClicked)
        self.ui.compareReadersButton.connect("clicked(bool)", self.onCompareReadersButton)
        self.ui.adjudicateButton.connect("clicked(bool)", self.onAdjudicateButton)
        disagreements = self.ui.disagreementsTableWidget
        disagreements.connect("currentCellChanged(int,int,int,int)", self.onDisagreementSelected)
        disagreements.connect("cellDoubleClicked(int,int)", self.onDisagreementDoubleClicked)
        self._saveAndNextShortcut = qt.QShortcut(qt.QKeySequence(SAVE_AND_NEXT_KEYS), self.parent)
        self._saveAndNextShortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)
        self._saveAndNextShortcut.connect("activated()", self._onSaveAndNextShortcut)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onWorklistSceneClose)

    def _onWorklistSceneClose(self, caller=None, event=None) -> None:
        """The scene is closing: the open case's nodes go with it (the worklist stays open)."""
        self._worklistKnownNodes = None
        self._worklistCase = None

    # --- Opening the worklist -----------------------------------------------------------------------------
    def onOpenWorklistButton(self) -> None:
        """Read the cohort and this reader's annotations; open the first case this reader has not done."""
        node = self._parameterNode
        source = pathOrNone(node.worklistSource)
        if source is None:
            self.ui.worklistCaseLabel.text = _("Choose the cohort folder or CSV manifest first.")
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not open the worklist."), waitCursor=True):
                if not self.logic.ensureDependencies(model=False):
                    self.ui.worklistCaseLabel.text = _(
                        "Restart Slicer to finish installing, then open again."
                    )
                    return
                reader = self._worklistReader or self._askWorklistReader()
                if reader is None:
                    return
                self._openWorklist(source, reader)
        except Exception:  # shown by tryWithErrorDisplay
            return
        settings.rememberPaths(node)
        following = self._worklist.next_case()
        if following is None:
            self.ui.worklistCaseLabel.text = _("Nothing left to do for {reader}: {progress}.").format(
                reader=self._worklistReader, progress=progressText(self._worklist.progress())
            )
            return
        self.openWorklistCase(following.case_id)

    def _openWorklist(self, source, reader) -> None:
        from BrainGemma3DLib.cohort.annotations import BY_ID, LEAST_CERTAIN, Worklist

        order = LEAST_CERTAIN if self._parameterNode.leastCertainFirst else BY_ID
        self._worklist = Worklist.open(source, reader, order=order)
        self._worklistCase = None
        self._showReaders(None)
        for path, problem in sorted(self._worklist.problems.items()):
            message = _("Annotation record not used: {path}: {problem}").format(path=path, problem=problem)
            panel.appendLog(self.ui.logTextEdit, message)
        self._fillWorklistTable()

    def _askWorklistReader(self) -> str | None:
        """Ask who annotates (once per session); None when cancelled or not a usable name."""
        from BrainGemma3DLib.cohort.annotations import check_reader
        from BrainGemma3DLib.io.errors import InputError

        remembered = qt.QSettings()
        name = askReader(str(remembered.value(READER_SETTINGS_KEY) or ""))
        if name is None:
            return None
        try:
            name = check_reader(name)
        except InputError as exc:
            slicer.util.errorDisplay(str(exc))
            return None
        self._worklistReader = name
        remembered.setValue(READER_SETTINGS_KEY, name)
        self.ui.worklistReaderLabel.text = _("Reader: {reader}").format(reader=name)
        return name

    def onWorklistReaderButton(self) -> None:
        """Annotate as another reader: the open worklist is read again with that reader's statuses."""
        if self._worklistBusy():
            return
        previous = self._worklistReader
        if self._askWorklistReader() in (None, previous) or self._worklist is None:
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not open the worklist."), waitCursor=True):
                self._openWorklist(self._worklist.source, self._worklistReader)
        except Exception:
            return
        following = self._worklist.next_case()
        if following is not None:
            self.openWorklistCase(following.case_id)

    def onWorklistManifestButton(self) -> None:
        node = self._parameterNode
        current = pathOrNone(node.worklistSource)
        start = current if current is not None and current.is_dir() else panel.sceneFolder()
        chosen = askManifest(start)
        if chosen:
            node.worklistSource = pathlib.Path(chosen)

    # --- The table ----------------------------------------------------------------------------------------
    def _fillWorklistTable(self) -> None:
        """One row per case in the chosen order: id, status, model agreement, warnings; and the progress."""
        table = self.ui.worklistTableWidget
        cases = self._worklist.cases if self._worklist is not None else []
        self._worklistRows = [case.case_id for case in cases]
        table.setRowCount(len(cases))
        for row, case in enumerate(cases):
            agreement = f"{case.agreement:.2f}" if case.agreement is not None else ""
            warnings = str(case.warnings) if case.draft else ""
            for column, text in enumerate((case.case_id, statusText(case), agreement, warnings)):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(caseToolTip(case))
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        if self._worklistCase in self._worklistRows:
            table.selectRow(self._worklistRows.index(self._worklistCase))
        self.ui.worklistProgressLabel.text = (
            progressText(self._worklist.progress()) if self._worklist is not None else ""
        )
        self._updateWorklistButtons()

    def _updateWorklist(self) -> None:
        """Follow the parameter node (called by the widget's ``_checkCanApply``): the order, the buttons."""
        node = self._parameterNode
        if self._worklist is not None and node is not None:
            from BrainGemma3DLib.cohort.annotations import BY_ID, LEAST_CERTAIN

            order = LEAST_CERTAIN if node.leastCertainFirst else BY_ID
            if self._worklist.order != order:
                self._worklist.order = order
                self._fillWorklistTable()
        self._updateWorklistButtons()

    def _updateWorklistButtons(self) -> None:
        node = self._parameterNode
        busy = bool(self.logic and self.logic.busy)
        opened = self._worklist is not None and not busy
        case = self._worklistCase if opened else None
        self.ui.openWorklistButton.enabled = bool(node) and pathOrNone(node.worklistSource) is not None
        self.ui.openCaseButton.enabled = opened and bool(self._worklistRows)
        self.ui.previousCaseButton.enabled = case is not None and self._worklist.previous(case) is not None
        self.ui.skipCaseButton.enabled = case is not None
        self.ui.saveAndNextButton.enabled = case is not None and bool(node and node.reportTextNode)
        self.ui.worklistReaderButton.enabled = opened  # before, Open worklist asks the name
        self.ui.compareReadersButton.enabled = opened
        selected = self._selectedDisagreement()
        self.ui.adjudicateButton.enabled = (
            selected is not None and selected == case and bool(node and node.reportTextNode)
        )

    def onWorklistCellDoubleClicked(self, row, column=0) -> None:
        if 0 <= row < len(self._worklistRows):
            self.openWorklistCase(self._worklistRows[row])

    def onOpenCaseButton(self) -> None:
        self.onWorklistCellDoubleClicked(self.ui.worklistTableWidget.currentRow())

    # --- One case -----------------------------------------------------------------------------------------
    def _worklistBusy(self) -> bool:
        """True (and said) while a report runs: a case is not changed under a running draft."""
        if self.logic.busy:
            self.ui.worklistCaseLabel.text = _("Wait for the running report (or cancel it) first.")
            return True
        return False

    def openWorklistCase(self, caseId: str) -> bool:
        """Open one case: its sequences and segmentation in a clean scene, then its draft (the batch's; the
        reader's own text when they annotated it already; else drafted now through Generate)."""
        if self._worklist is None or self._worklistBusy():
            return False
        case = self._worklist.case(caseId)
        if not case.usable:
            self.ui.worklistCaseLabel.text = _("{case} cannot be annotated: {problem}").format(
                case=caseId, problem=case.problem or _("no FLAIR")
            )
            return False
        from BrainGemma3DLib.slicer import scene

        self._clearWorklistCase()
        self._worklistKnownNodes = scene.node_ids()
        self._worklistCase = caseId
        try:
            with slicer.util.tryWithErrorDisplay(
                _("Could not open case {case}.").format(case=caseId), waitCursor=True
            ):
                self._loadWorklistCase(case)
                drafting = self._showWorklistDraft(case)
        except Exception:  # shown by tryWithErrorDisplay
            self._fillWorklistTable()
            return False
        self._fillWorklistTable()
        self._describeWorklistCase(case, drafting)
        return True

    def _loadWorklistCase(self, case) -> None:
        """The case's images into the scene and into the panel's inputs (what Generate would use)."""
        from BrainGemma3DLib.slicer import scene

        node = self._parameterNode
        volumes = {
            sequence: scene.load_volume_file(path, name=f"{case.case_id}_{sequence}")
            for sequence, path in case.inputs.items()
        }
        flair = volumes["flair"]
        segmentation = None
        if case.seg:
            segmentation = scene.load_tumour_segmentation(
                case.seg, flair, name=f"{case.case_id} tumour segmentation"
            )
        three = "t1ce" in volumes and "t2" in volumes and modelSequences(node) == 3
        with slicer.util.NodeModify(node.parameterNode):
            node.inputVolume = flair
            node.t1ceVolume = volumes["t1ce"] if three else None
            node.t2Volume = volumes["t2"] if three else None
            node.tumourSegmentation = segmentation
        scene.show_in_slice_views(flair)

    def _showWorklistDraft(self, case) -> bool:
        """Show the case's draft; True when it is being drafted now (no batch draft, no earlier text)."""
        from BrainGemma3DLib.slicer import scene

        node = self._parameterNode
        mine = self._worklist.record(case.case_id) or {}
        mineText = mine.get("final_text") if mine.get("status") == "annotated" else None
        folder = case.draft
        earlier = pathlib.Path((mine.get("draft") or {}).get("report_json") or ".").parent
        if folder is None and (earlier / "report.json").is_file() and (earlier / "report.pdf").is_file():
            folder = earlier  # the draft this reader started from, made in the panel then
        if folder is not None:
            textNode, overlay = self.logic.showResults(
                draftResult(folder), node.inputVolume, opacity=node.opacity, topK=node.topK
            )
        elif mineText:
            textNode = scene.report_text_node(mineText, name=f"{case.case_id} annotation")
            overlay = None
        else:
            with slicer.util.NodeModify(node.parameterNode):
                node.reportTextNode, node.attributionSegmentation = None, None
            if not self.ui.applyButton.enabled:
                raise ValueError(self.ui.applyButton.toolTip)
            self.onApplyButton()  # drafted in the worker, shown by the Generate path when it is done
            return True
        if mineText:
            scene.report_text_node(mineText, node=textNode)  # the reader's saved text, to revise
        with slicer.util.NodeModify(node.parameterNode):
            node.reportTextNode, node.attributionSegmentation = textNode, overlay
        return False

    def _describeWorklistCase(self, case, drafting) -> None:
        position = self._worklistRows.index(case.case_id) + 1
        if drafting:
            source = _("no batch draft: drafting it now")
        elif case.draft:
            source = _("batch draft")
            if case.agreement is not None:
                source += ", " + _("model agreement {agreement:.2f}").format(agreement=case.agreement)
        else:
            source = _("your saved text")
        self.ui.worklistCaseLabel.text = _("Case {position} of {total}: {case} ({status}; {source}).").format(
            position=position, total=len(self._worklistRows), case=case.case_id,
            status=statusText(case), source=source,
        )  # fmt: skip

    def _clearWorklistCase(self) -> None:
        """Remove the open case's nodes (and anything added since it opened): the next case starts clean."""
        if self._worklistKnownNodes is None:
            return
        from BrainGemma3DLib.slicer import scene

        node = self._parameterNode
        with slicer.util.NodeModify(node.parameterNode):
            for field in CASE_FIELDS:
                setattr(node, field, None)
        scene.remove_nodes_added_since(self._worklistKnownNodes)
        self._worklistKnownNodes = None

    # --- Save and next, skip, previous --------------------------------------------------------------------
    def onSaveAndNextButton(self) -> None:
        """Write the text as this reader's annotation of the open case, then open the next case to do."""
        caseId, node = self._worklistCase, self._parameterNode
        if caseId is None or self._worklistBusy():
            return
        textNode = node.reportTextNode
        if textNode is None:
            self.ui.worklistCaseLabel.text = _("No report text to save yet: wait for the draft.")
            return
        from BrainGemma3DLib.slicer import scene

        text = scene.read_text_node(textNode)
        draft = textNode.GetAttribute(REPORT_JSON_ATTRIBUTE) or None
        try:
            with slicer.util.tryWithErrorDisplay(
                _("Could not save the annotation of {case}.").format(case=caseId), waitCursor=True
            ):
                self._worklist.save(caseId, text, draft=draft)
        except Exception:
            return
        self._openNextWorklistCase()

    def _onSaveAndNextShortcut(self) -> None:
        if self.ui.saveAndNextButton.enabled:
            self.onSaveAndNextButton()

    def onSkipCaseButton(self) -> None:
        """Skip the open case with a one-line reason (kept in this reader's record); open the next one."""
        caseId = self._worklistCase
        if caseId is None or self._worklistBusy():
            return
        reason = askSkipReason(caseId)
        if not reason:
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not skip {case}.").format(case=caseId)):
                self._worklist.skip(caseId, reason)
        except Exception:
            return
        self._openNextWorklistCase()

    def onPreviousCaseButton(self) -> None:
        caseId = self._worklistCase
        before = self._worklist.previous(caseId) if caseId is not None and self._worklist else None
        if before is not None:
            self.openWorklistCase(before.case_id)

    def _openNextWorklistCase(self) -> None:
        following = self._worklist.next_case()
        if following is None:
            self._fillWorklistTable()
            self.ui.worklistCaseLabel.text = _("All cases done for {reader}: {progress}.").format(
                reader=self._worklistReader, progress=progressText(self._worklist.progress())
            )
            return
        self.openWorklistCase(following.case_id)

    # --- Readers: agreement and adjudication --------------------------------------------------------------
    def onCompareReadersButton(self) -> None:
        """Read every reader's records again and show the library's comparison of them."""
        if self._worklist is None:
            return
        from BrainGemma3DLib.cohort.agreement import compare_readers
        from BrainGemma3DLib.cohort.annotations import read_annotations
        from BrainGemma3DLib.io.errors import InputError

        self._worklist.refresh()  # another reader's folder may have been copied in
        self._fillWorklistTable()
        try:
            result = compare_readers(read_annotations(self._worklist.state_dir)[0])
        except InputError as exc:
            self._showReaders(None)
            self.ui.readersSummaryLabel.text = _("Nothing to compare: {problem}.").format(problem=exc.problem)
            return
        self._showReaders(result)

    def _showReaders(self, result) -> None:
        """Fill the agreement and disagreement tables (empty for None); keep the selected case selected."""
        selected = self._selectedDisagreement()
        self._readersResult = result
        agreement, disagreements = self.ui.readersAgreementTableWidget, self.ui.disagreementsTableWidget
        rows = agreementRows(result) if result else []
        agreement.setRowCount(len(rows))
        for row, texts in enumerate(rows):
            for column, text in enumerate(texts):
                agreement.setItem(row, column, qt.QTableWidgetItem(text))
        agreement.resizeColumnsToContents()
        cases = result["disagreements"] if result else []
        self._disagreementRows = [case["case_id"] for case in cases]
        disagreements.setRowCount(len(cases))
        for row, case in enumerate(cases):
            texts = (case["case_id"], differencesText(case), case["adjudicated_by"] or "")
            for column, text in enumerate(texts):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(_("Select to compare the texts; double-click to open the case."))
                disagreements.setItem(row, column, item)
        disagreements.resizeColumnsToContents()
        self.ui.readersSummaryLabel.text = self._readersSummary(result) if result else ""
        if selected in self._disagreementRows:
            disagreements.selectRow(self._disagreementRows.index(selected))
        self.onDisagreementSelected(disagreements.currentRow())

    def _readersSummary(self, result) -> str:
        pairs = [
            _("{pair}: {cases} common case(s), {distance:g} word(s) apart on average").format(
                pair=name, cases=pair["cases"], distance=pair["word_distance"]["mean"]
            )
            if pair["cases"]
            else _("{pair}: no common case").format(pair=name)
            for name, pair in result["pairs"].items()
        ]
        disagree = result["disagreements"]
        settled = sum(bool(case["adjudicated_by"]) for case in disagree)
        return _("{pairs}. Readers disagree on {count} case(s), {settled} adjudicated.").format(
            pairs="; ".join(pairs), count=len(disagree), settled=settled
        )

    def _selectedDisagreement(self) -> str | None:
        row = self.ui.disagreementsTableWidget.currentRow()
        return self._disagreementRows[row] if 0 <= row < len(self._disagreementRows) else None

    def _disagreement(self, caseId):
        cases = self._readersResult["disagreements"] if self._readersResult else []
        return next((case for case in cases if case["case_id"] == caseId), None)

    def onDisagreementSelected(self, row, column=0, previousRow=-1, previousColumn=-1) -> None:
        """Show the selected case's readers side by side: their differing statements and their texts."""
        case = (
            self._disagreement(self._disagreementRows[row])
            if 0 <= row < len(self._disagreementRows)
            else None
        )
        self.ui.readersComparisonTextBrowser.setHtml(comparisonHtml(case) if case else "")
        self._updateWorklistButtons()

    def onDisagreementDoubleClicked(self, row, column=0) -> None:
        """Open the case, so that its adjudicated text can be written in the report editor."""
        if 0 <= row < len(self._disagreementRows):
            self.openWorklistCase(self._disagreementRows[row])
            self._updateWorklistButtons()

    def onAdjudicateButton(self) -> None:
        """Save the report editor's text of the selected (open) case as its adjudicated record, by this
        reader; then compare again."""
        caseId, node = self._selectedDisagreement(), self._parameterNode
        if caseId is None or self._worklist is None or self._worklistBusy():
            return
        if caseId != self._worklistCase or node.reportTextNode is None:
            self.ui.worklistCaseLabel.text = _(
                "Open {case} first (double-click it), then write its text."
            ).format(case=caseId)
            return
        from BrainGemma3DLib.slicer import scene

        textNode = node.reportTextNode
        text = scene.read_text_node(textNode)
        draft = textNode.GetAttribute(REPORT_JSON_ATTRIBUTE) or None
        try:
            with slicer.util.tryWithErrorDisplay(
                _("Could not save the adjudication of {case}.").format(case=caseId), waitCursor=True
            ):
                path = self._worklist.adjudicate(caseId, text, draft=draft)
        except Exception:
            return
        panel.appendLog(
            self.ui.logTextEdit,
            _("Adjudicated {case} by {reader}: {path}").format(
                case=caseId, reader=self._worklistReader, path=path
            ),
        )
        self.onCompareReadersButton()
        self.ui.worklistCaseLabel.text = _("{case} adjudicated by {reader}.").format(
            case=caseId, reader=self._worklistReader
        )
