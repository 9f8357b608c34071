"""Consensus decoding: the draft most of the model's own drafts agree with, statement by statement."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import SAMPLE

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.reporting.consensus import DecodingOptions, choose, decode

LEFT = "A lesion is seen in the left frontal lobe. "
RIGHT = "A lesion is seen in the right frontal lobe. "


def test_the_majority_statement_wins_over_the_most_likely_wording():
    # The greedy draft (first) denies enhancement; every other draft affirms it, each in its own words.
    drafts = [
        LEFT + "The lesion shows no contrast enhancement.",
        LEFT + "Enhancing tumor tissue is present.",
        LEFT + "An enhancing component is seen within the lesion.",
        LEFT + "There is contrast enhancement of the solid part of the mass.",
    ]
    best, agreement = choose(drafts)
    assert best != 0
    assert agreement["enhancement"] == pytest.approx(0.75)
    assert agreement["laterality"] == 1.0 and agreement["lobes"] == 1.0


def test_side_lobes_and_findings_are_voted_together():
    drafts = [
        RIGHT + "There is surrounding edema.",
        LEFT + "There is surrounding edema.",
        LEFT + "Edema surrounds it.",
        "A lesion is seen in the left parietal lobe. No edema is seen.",
    ]
    best, agreement = choose(drafts)
    assert best in (1, 2)  # left, frontal, edema: what most drafts say on every statement
    assert agreement["laterality"] == pytest.approx(0.75)
    assert agreement["edema"] == pytest.approx(0.75)


def test_ties_and_a_single_draft_keep_the_greedy_one():
    assert choose([LEFT + "Edema.", LEFT + "Edema."])[0] == 0
    best, agreement = choose([RIGHT + "No necrosis."])
    assert best == 0 and set(agreement.values()) == {1.0}


@pytest.mark.parametrize("options", [DecodingOptions(samples=-1), DecodingOptions(8, temperature=0.0)])
def test_bad_options_are_refused(options):
    with pytest.raises(InputError):
        options.check()


@pytest.fixture(scope="module")
def sample_grid(demo_model):
    from BrainGemma3DLib.io.volume import load_study

    grid, _mapping = load_study([SAMPLE]).to_model_grid(demo_model.cfg.grid)
    return demo_model, grid


def test_same_seed_same_draft_and_the_callers_random_state_is_untouched(sample_grid):
    model, grid = sample_grid
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = decode(model, grid, DecodingOptions(4, 0.9, seed=5))
    assert torch.equal(state, torch.get_rng_state())
    second = decode(model, grid, DecodingOptions(4, 0.9, seed=5))
    assert first.text == second.text and first.decoding == second.decoding
    assert first.decoding["method"] == "consensus" and first.decoding["drafts"] == 5
    assert set(first.decoding["agreement"]) >= {"laterality", "lobes", "edema", "enhancement"}
    drafts = [d.text for d in model.sample(grid, 4, temperature=0.9, seed=5)]
    assert len(drafts) == 4 and all(d.strip() for d in drafts)
    assert first.text in [model.generate(grid)[0].text, *drafts]  # always one of the model's own drafts


def test_zero_samples_is_plain_greedy_decoding(sample_grid):
    model, grid = sample_grid
    draft = decode(model, grid, DecodingOptions(samples=0))
    assert draft.text == model.generate(grid)[0].text
    assert draft.decoding == {"method": "greedy"}


def test_report_records_the_decoding_and_the_pdf_shows_the_agreement(tmp_path):
    import pypdfium2 as pdfium

    from BrainGemma3DLib.cli import main

    out = tmp_path / "case"
    assert main(["report", str(SAMPLE), "--out", str(out), "--quiet", "--drafts", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["decoding"]["method"] == "consensus" and report["decoding"]["drafts"] == 4
    pdf = pdfium.PdfDocument(str(out / "report.pdf"))
    text = "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    assert "Model agreement" in text and "consensus of 4 drafts" in text
    assert "Model agreement" in (out / "report.txt").read_text()

    greedy = tmp_path / "greedy"
    assert main(["report", str(SAMPLE), "--out", str(greedy), "--quiet", "--drafts", "0"]) == 0
    assert json.loads((greedy / "report.json").read_text())["decoding"] == {"method": "greedy"}


def test_bad_drafts_option_is_one_line_exit_2(tmp_path, capsys):
    from BrainGemma3DLib.cli import main

    out = tmp_path / "case"
    assert main(["report", str(SAMPLE), "--out", str(out), "--quiet", "--drafts", "-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sampled drafts" in err[0]
    assert not out.exists()


def test_agreement_lists_the_weakest_statement_first_and_disappears_once_edited():
    from BrainGemma3DLib.reporting.report import build_report

    consensus = {"method": "consensus", "drafts": 9, "agreement": {"laterality": 1.0, "enhancement": 0.556}}
    report = build_report(LEFT + "Edema.", model={}, input={}, timings={}, decoding=consensus)
    sentence = report.agreement_sentence()
    assert sentence.startswith("Model agreement (share of its 9 drafts stating the same): ")
    assert sentence.index("enhancement 56\u00a0%") < sentence.index("side 100\u00a0%")
    assert report.with_text(RIGHT + "Edema.").agreement_sentence() == ""
    assert report.with_text(RIGHT + "Edema.").with_text(LEFT + "Edema.").agreement_sentence() == sentence
    greedy = build_report("x", model={}, input={}, timings={}, decoding={"method": "greedy"})
    assert greedy.agreement_sentence() == ""
