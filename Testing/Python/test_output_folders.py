"""What a user finds in ``--out``: a new report, or the previous one whole, never a mix; a report is replaced
only when asked, files BrainGemma3D did not write are never deleted, and a crash at any moment leaves the old
set or the new set (the next run cleans up what a dead run left beside it)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, SAMPLE

from BrainGemma3DLib.cli import main
from BrainGemma3DLib.io import atomic
from BrainGemma3DLib.io.atomic import replace_dir
from BrainGemma3DLib.io.errors import InputError

QUICK = ["--quiet", "--drafts", "0"]
EXPLAIN = ["--explain", "--samples", "20", "--supervoxels", "12", "--batch-size", "8"]
SET = ("report.json", "report.txt", "report.pdf", "attribution.nii.gz", "attribution.seg.nrrd")


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_an_empty_out_is_a_usage_error_and_nothing_in_the_current_folder_changes(tmp_path):
    (tmp_path / "report.json").write_text('{"mine": true}')
    run = subprocess.run(
        [sys.executable, "-m", "BrainGemma3DLib", "report", str(SAMPLE), "--out", "", *QUICK],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 2 and "output path is empty" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert (tmp_path / "report.json").read_text() == '{"mine": true}'
    with pytest.raises(SystemExit) as missing:  # --out missing altogether: argparse's usage error
        main(["report", str(SAMPLE), *QUICK])
    assert missing.value.code == 2


def test_a_previous_report_is_kept_unless_overwrite_and_then_replaced_whole(tmp_path, capsys):
    out = tmp_path / "case"
    assert main(["report", str(SAMPLE), "--out", str(out), *QUICK, *EXPLAIN]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(SET)
    before = (out / "report.json").read_bytes()
    capsys.readouterr()

    assert main(["report", str(SAMPLE), "--out", str(out), *QUICK]) == 2
    assert "--overwrite" in _err(capsys)
    assert (out / "report.json").read_bytes() == before and (out / "attribution.nii.gz").exists()

    # Without --explain this time: the old attribution must not stay beside a report that has none.
    assert main(["report", str(SAMPLE), "--out", str(out), *QUICK, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.pdf", "report.txt"]
    assert "explanation" not in json.loads((out / "report.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


def test_overwrite_never_deletes_what_braingemma3d_did_not_write(tmp_path, capsys):
    out = tmp_path / "case"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / "report-signed.pdf").write_bytes(b"%PDF- signed evidence")
    assert main(["report", str(SAMPLE), "--out", str(out), *QUICK, "--overwrite"]) == 2
    err = _err(capsys)
    assert "report-signed.pdf" in err and "did not write" in err
    assert (out / "report-signed.pdf").read_bytes() == b"%PDF- signed evidence"


def _old_set(out):
    out.mkdir()
    for name in SET:
        (out / name).write_text(f"old {name}")


def _new_set(stage):
    for name in SET[:3]:
        (stage / name).write_text(f"new {name}")


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_the_swap_is_all_or_nothing_even_when_a_rename_fails(tmp_path, monkeypatch, exchange):
    out = tmp_path / "case"
    _old_set(out)
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    with replace_dir(out, SET, overwrite=True) as stage:
        _new_set(stage)
    assert sorted(p.name for p in out.iterdir()) == sorted(SET[:3])
    assert all((out / n).read_text() == f"new {n}" for n in SET[:3])

    # The rename that would put the new set in place fails: the old set is back, whole.
    _new_out = tmp_path / "case2"
    _old_set(_new_out)
    real_rename = os.rename

    def failing(src, dst):
        if ".tmp-" in str(src):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(PermissionError), replace_dir(_new_out, SET, overwrite=True) as stage:
        _new_set(stage)
    assert sorted(p.name for p in _new_out.iterdir()) == sorted(SET)
    assert all((_new_out / n).read_text() == f"old {n}" for n in SET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "case2"]


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from BrainGemma3DLib.io import atomic
    out, when = Path(sys.argv[1]), sys.argv[2]
    if when == "between-renames":
        atomic._exchange = lambda a, b: False
        real = os.rename
        def rename(src, dst):
            real(src, dst)
            if ".old-" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.rename = rename
    with atomic.replace_dir(out, ["report.json", "report.txt"], overwrite=True) as stage:
        (stage / "report.json").write_text("new")
        if when == "writing":
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("when", ["writing", "between-renames"])
def test_after_kill_9_the_old_set_is_there_and_the_next_run_cleans_up(tmp_path, when):
    out = tmp_path / "case"
    out.mkdir()
    (out / "report.json").write_text("old")
    run = subprocess.run([sys.executable, "-c", CRASH, str(out), when], cwd=REPO, capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    expected = [".case.tmp-"] if when == "writing" else [".case.old-", ".case.tmp-"]
    assert [name[: len(e)] for name, e in zip(leftovers, expected, strict=True)] == expected, leftovers
    restored = atomic.recover_stale(out)  # what the next run into ``out`` does first
    assert sorted(p.name for p in restored) == leftovers
    assert (out / "report.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from BrainGemma3DLib.app import pipeline

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "write_report", full)
    out = tmp_path / "case"
    assert main(["report", str(SAMPLE), "--out", str(out), *QUICK]) == 2
    err = _err(capsys)
    assert "no space left on device" in err and str(out) in err
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_refuses_an_unrelated_folder_before_any_work(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"), replace_dir(out, SET):
        raise AssertionError("never reached")
    assert (out / "notes.txt").read_text() == "keep"
