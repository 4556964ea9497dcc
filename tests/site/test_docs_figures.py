"""A figure in the README or the docs that cites a record is the number it names there
(tools/prose_figures.py).

The README's figures of the GPU benchmarks and of the price of determinism link to their records
with the quantity they are (a field, the median of a logged key, a formula over both runs); the
check reads each again. Edited figures, a unit that scales another way, and a field the record
lacks are named; the README as written and a figure rounded as written stand. A page of the docs
links to the copy of the record the site publishes, and is read the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ledger_support import ROOT
from tools.integrity.prose_figures import figure_problems

README = ROOT / "README.md"
# The price of determinism as the README states it: 1 - on / off of the two runs' median tokens/s.
PRICE = "[11 %](evidence/runs/gpt2-deterministic-true/metadata.json#overhead("


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_readme_figures_are_their_records_numbers() -> None:
    text = _readme()
    assert PRICE in text and text.count("](evidence/runs/") >= 12
    assert figure_problems(text, ROOT) == []


@pytest.mark.parametrize(
    ("written", "edited"),
    [
        (PRICE, PRICE.replace("11 %", "9 %")),  # the price of determinism restated
        ("[1.047×]", "[1.048×]"),  # one unit of the last digit past the ratio's rounding
        ("[222 k]", "[232 k]"),
        ("[37.7 %]", "[0.377 %]"),  # a share written as a percentage of another scale
    ],
)
def test_an_edited_figure_is_named_with_what_its_record_gives(written: str, edited: str) -> None:
    text = _readme()
    assert written in text
    (problem,) = figure_problems(text.replace(written, edited, 1), ROOT)
    assert problem[1].startswith(f"says {edited.split(']')[0][1:]!r}, but evidence/runs/")


def test_a_figure_rounded_as_written_stands_and_a_missing_field_is_named(tmp_path: Path) -> None:
    """1.0475 written 1.048 and 1.05 (each within half a unit of its last digit); a field the
    record does not have, and a record the ledger does not hold, are each their own finding."""
    base = "evidence/runs/bench-train-20261127T075906/metadata.json#"
    line = f"[1.048×]({base}metrics.eager_ratio) [1.05×]({base}metrics.eager_ratio)"
    assert figure_problems(line, ROOT) == []
    assert figure_problems(f"[1.04×]({base}metrics.eager_ratio)", ROOT) != []
    (missing,) = figure_problems(f"[3 k]({base}metrics.no_such_field)", ROOT)
    assert "its record has no field metrics.no_such_field" in missing[1]
    (absent,) = figure_problems("[3 k](evidence/runs/no-such-run/metadata.json#metrics.x)", ROOT)
    assert "the ledger holds no readable record no-such-run" in absent[1]


GPU_PAGE = ROOT / "docs" / "gpu.md"


def test_the_docs_figures_are_their_records_numbers() -> None:
    text = GPU_PAGE.read_text(encoding="utf-8")
    assert text.count("](reference/evidence/") >= 20
    assert figure_problems(text, ROOT) == []


@pytest.mark.parametrize(
    ("written", "edited"),
    [
        ("**[11 %](reference/evidence/", "**[12 %](reference/evidence/"),  # the price of determinism
        ("[3.36×](reference/evidence/", "[3.63×](reference/evidence/"),  # the trace's bf16 ratio
        ("[222 k](reference/evidence/", "[232 k](reference/evidence/"),  # a median over a window of steps
        ("[38.4 %](reference/evidence/", "[40.0 %](reference/evidence/"),  # an MFU
    ],
)
def test_an_edited_figure_of_the_docs_is_named(written: str, edited: str) -> None:
    text = GPU_PAGE.read_text(encoding="utf-8")
    assert written in text
    (problem,) = figure_problems(text.replace(written, edited, 1), ROOT)
    assert problem[1].startswith(f"says {edited.split(']')[0].lstrip('*[')!r}, but evidence/runs/")


def test_a_docs_link_one_folder_down_is_read_like_the_readme_s() -> None:
    """A page under docs/concepts/ links with ../; the figure is read from the ledger's record."""
    run = "bench-train-20261127T075906/metadata.json#metrics.eager_ratio"
    assert figure_problems(f"[1.048×](../reference/evidence/{run})", ROOT) == []
    (problem,) = figure_problems(f"[1.148×](../reference/evidence/{run})", ROOT)
    assert "gives 1.0475" in problem[1]
