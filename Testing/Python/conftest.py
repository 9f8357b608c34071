"""Shared fixtures: the demo model and one phantom data set, each made once per test run.

The suite runs on every core with pytest-xdist (``make test``: ``-n`` workers, ``--dist loadgroup``).
A test that uses a module-scoped fixture of its module is grouped with the module's other such tests (one
worker builds that fixture once); data every worker needs is built once per run under a file lock
(:func:`built_once`); each worker has its own registration cache, temporary folders and (``pacs.py``) its
own Orthanc on free ports."""

from __future__ import annotations

import json
import locale
import os
import shutil
import tempfile
from pathlib import Path

# Under xdist each worker gets its share of the cores for torch and the BLAS (and so do the commands it
# starts): two workers each running two OpenMP threads on two cores spin against each other (measured: the
# suite took 1,178 s so and 968 s with one thread each). Set before numpy or torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_share)

import pytest  # noqa: E402
from helpers import REPO, SAMPLE, run_cli, start_cli_zygote  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The registration cache (anatomy) of this test process: never the user's own ~/.cache, and one per xdist
# worker (a worker inherits the controller's environment, so the controller's temporary cache is replaced).
if os.environ.get("BRAINGEMMA3D_CACHE") in (None, os.environ.get("BG3D_TEST_OWN_CACHE")):
    os.environ["BRAINGEMMA3D_CACHE"] = os.environ["BG3D_TEST_OWN_CACHE"] = tempfile.mkdtemp(
        prefix=f"bg3d-test-cache-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds (skip with -m 'not slow' for a quick run)"
    )
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        # Where the workers write each test's group for the controller's scheduler (see below).
        os.environ[GROUPS_FILE] = str(Path(tempfile.mkdtemp(prefix="bg3d-test-groups-")) / "groups.json")


#: The environment variable naming the file of test groups (xdist workers write it, the controller reads it).
GROUPS_FILE = "BG3D_TEST_GROUPS_FILE"


def pytest_collection_modifyitems(config, items):
    """Under xdist: a test that uses a module-scoped fixture of its own module joins that module's group, so
    that one worker builds the fixture once (``--dist loadgroup`` keeps a group on one worker); the others go
    to whichever worker is free. The slow tests and groups are handed out first, so that the longest ones do
    not start last. A serial run keeps the written order.

    xdist passes ``xdist_group`` marks to its scheduler by renaming the test ids, which pytest 9.2 no longer
    allows (the ids stay unchanged and the groups are lost), so the groups go to the scheduler in a file."""
    if not hasattr(config, "workerinput"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(name=item.module.__name__))
    weight: dict[str, float] = {}
    for item in items:
        test = item.nodeid.split("::", 1)[-1]
        known = next((seconds for name, seconds in LONGEST.items() if test.startswith(name)), 0)
        slow = 1 if item.get_closest_marker("slow") else 0
        weight[_group(item)] = weight.get(_group(item), 0) + known + slow
    items.sort(key=lambda item: -weight[_group(item)])  # stable: the written order among equals
    if os.environ.get(GROUPS_FILE):
        groups = {item.nodeid: _group(item) for item in items if _group(item) != item.nodeid}
        path = Path(os.environ[GROUPS_FILE])
        scratch = path.with_name(f"{path.name}.{os.getpid()}")
        scratch.write_text(json.dumps(groups), encoding="utf-8")
        os.replace(scratch, path)  # every worker writes the same groups: whole files, never a torn one


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups the workers wrote (see :func:`pytest_collection_modifyitems`)."""
    if config.getoption("dist", "no") != "loadgroup" or not os.environ.get(GROUPS_FILE):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FixtureGroups(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once, when every worker has collected (and so written it)
                self.groups = json.loads(Path(os.environ[GROUPS_FILE]).read_text(encoding="utf-8"))
            if nodeid in self.groups:
                return self.groups[nodeid]
            head, at, group = nodeid.rpartition("@")  # an xdist that renames the ids again
            return group if at and group and "]" not in group else nodeid

    return FixtureGroups(config, log)


#: The longest tests (seconds, serial on the 2-core machine, `--durations`; only their order matters): under
#: xdist they and their groups are handed out first, longest first, then the other ``slow`` ones.
LONGEST = {
    "test_curated_reviews_fine_tune_a_wrong_model": 230,
    "test_the_pacs_routes_a_study_to_the_node_and_its_draft_comes_back": 125,  # + its department fixture (50)
    "test_a_study_uid_given_to_the_node_is_fetched_from_the_pacs": 60,
    "test_three_phases_chain_and_resume": 185,
    "test_dimse_round_trip_fetch_report_export_send": 140,
    "test_batch_stops_on_ctrl_c_survives_a_kill": 130,
    "test_findings_learnability_experiment_runs_every_variant": 100,
    "test_generate_edit_show_evidence_sign_and_open_from_the_panel": 95,
    "test_a_new_model_takes_the_sequences_it_is_trained_on": 85,
    "test_finding_loss_trains_saves_its_head_and_resumes": 73,
    "test_report_names_the_evidence_in_words": 70,
    "test_report_worker_generates_keeps_the_model_cancels": 66,
    "test_draft_objects_are_valid_dicom_and_say_what_the_report_says": 60,
    "test_a_dicom_volume_brings_its_identity_and_cancel_leaves_nothing": 59,
    "test_evaluate_explain_scores_attributions_against_the_tumour": 53,
    "test_a_generate_runs_its_requests_in_order_and_a_crash_ends_the_stream": 52,
    # Measured under xdist (-n 2, 2026-12-07), each on one worker.
    "test_two_workers_one_killed_mid_job": 68,
    "test_a_local_run_and_a_node_run_give_the_same_text_and_segmentation": 66,
    "test_reports_say_which_series_and_enhanced_mr_reports_the_same_side": 51,
    "test_report_on_the_nifti_says_what_the_report_on_the_dicom_says": 44,
    # Measured alone on a loaded machine (2026-12-08): the worklist's shared batch, the CPU precisions.
    "test_annotate_three_close_reopen_continue_at_case_four": 60,
    "test_bf16_and_int8_demo_drafts_say_what_float32_says": 60,
    "test_a_case_without_a_batch_draft_is_drafted_in_the_worker": 45,
}


def _group(item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return (mark.kwargs.get("name") or mark.args[0]) if mark else item.nodeid


def _uses_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name) or ()
        if definitions and definitions[-1].scope in ("module", "class", "package"):
            return True
    return False


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``name`` made by ``build(folder)`` once per test run. Under xdist the workers share it: the
    first builds it under a file lock in the run's common temporary folder, the others wait and reuse it.
    Tests must not change it (copy it first)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own basetemp
    folder, done = root / "shared" / name, root / "shared" / f"{name}.done"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "shared" / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(autouse=True)
def _locale_unchanged():
    """Native libraries (VTK/MRML, GDCM) may switch the C locale; restore it so that no later test reads
    text with an ASCII default because an earlier one loaded a DICOM series or a scene."""
    before = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != before:
        locale.setlocale(locale.LC_ALL, before)


@pytest.fixture(scope="session", autouse=True)
def _cli_zygote():
    """The command-line runs of this test process fork from one pre-imported parent (helpers.run_cli);
    it starts importing now, while the first tests run."""
    start_cli_zygote()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_model():
    """The bundled demo weights on the CPU, loaded once; tests must not change it."""
    from BrainGemma3DLib.model import load

    return load("demo", device="cpu")


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory) -> Path:
    """8 tumour cases and 2 healthy controls (seed 9, all four sequences) in the BraTS + TextBraTS layout,
    generated once per run (shared by the xdist workers); a test that changes files works on
    :func:`phantom_copy`."""

    def build(folder: Path) -> None:
        out = folder / "data"
        result = run_cli("phantoms", "--out", str(out), "--n", "8", "--healthy", "2", "--seed", "9",
                         "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, "phantoms-seed9", build) / "data"


@pytest.fixture(scope="session")
def sample_report_explained(tmp_path_factory) -> Path:
    """The sample case's report with its explanation (greedy draft, the default LIME), made once per run by
    the command line for the tests that read it; tests must not change it."""

    def build(folder: Path) -> None:
        result = run_cli("report", str(SAMPLE), "--out", str(folder / "report"), "--explain", "--drafts", "0",
                         "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr

    return built_once(tmp_path_factory, "sample-report-explained", build) / "report"


@pytest.fixture
def phantom_copy(phantom_data, tmp_path) -> Path:
    """A private copy of :func:`phantom_data` to change."""
    return Path(shutil.copytree(phantom_data, tmp_path / "data"))
