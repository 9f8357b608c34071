"""Shared fixtures: the demo model and one phantom data set, each made once per test session."""

from __future__ import annotations

import locale
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import REPO, run_cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The registration cache (anatomy) of this test session: never the user's own ~/.cache.
os.environ.setdefault("BRAINGEMMA3D_CACHE", tempfile.mkdtemp(prefix="bg3d-test-cache-"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds (skip with -m 'not slow' for a quick run)"
    )


@pytest.fixture(autouse=True)
def _locale_unchanged():
    """Native libraries (VTK/MRML, GDCM) may switch the C locale; restore it so that no later test reads
    text with an ASCII default because an earlier one loaded a DICOM series or a scene."""
    before = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != before:
        locale.setlocale(locale.LC_ALL, before)


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
    generated once; a test that changes files works on :func:`phantom_copy`."""
    out = tmp_path_factory.mktemp("phantoms") / "data"
    result = run_cli("phantoms", "--out", str(out), "--n", "8", "--healthy", "2", "--seed", "9", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def phantom_copy(phantom_data, tmp_path) -> Path:
    """A private copy of :func:`phantom_data` to change."""
    return Path(shutil.copytree(phantom_data, tmp_path / "data"))
