"""benchmarks/stats_tiles.py: every candidate tile of the CUDA statistics kernel runs on the sites
of a real forward (slices of the fused projections included) and computes the tile in use's
statistics, so a GPU session's search spends its minutes on timing, not on a candidate that fails.
Here in Triton's interpreter, where the times mean nothing."""

from __future__ import annotations

import pytest
import torch

from benchmarks.stats_tiles import CANDIDATES, forward_sites, main, search
from stack.model import GPT, ModelConfig
from stack.train.presets import PRESETS

pytestmark = pytest.mark.triton  # the statistics kernels run here, interpreted on a CPU


def test_a_forward_shows_its_sites_as_the_tracer_sees_them_without_a_copy() -> None:
    """The sites kept are the forward's own tensors: the fused projection's q, k and v are views of
    one product (not contiguous), as the statistics kernel reads them in a trace."""
    config = ModelConfig(vocab=256, **PRESETS["smoke"]["model"])
    sites = forward_sites(GPT(config, seed=0).eval(), torch.randint(256, (1, 16)))
    assert len(sites) > 10
    assert any(not site.is_contiguous() for site in sites), "a fused projection's slice"


def test_every_candidate_tile_computes_the_statistics_of_the_tile_in_use() -> None:
    """Under bf16 autocast, whose sites mix bf16 products and float32 norms (each dtype's kernels:
    tests/kernels/test_kernel_compile.py compiles every one for Hopper)."""
    found = search("smoke", 256, 1, torch.device("cpu"), repeats=1, tokens=8, precisions=("bf16",))
    rows = found["bf16"]["site_stats"]["candidates"]
    assert len(rows) == 1 + len(CANDIDATES)
    assert max(row["relative_difference"] for row in rows) < 1e-9, rows
    assert found["bf16"]["site_stats"]["best"] in rows


def test_a_count_that_is_not_positive_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--repeats", "0"])
    assert refused.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
