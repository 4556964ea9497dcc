"""The generated pages show the ledger dashboard, each gate, the traceability matrix, every run and
comparisons of runs, with verdicts as badges and measured values as readable rows."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import markdown
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from contracts.judges import TEST_FAILED
from tools.records.scratch import git, make_record, make_repo, passed
from tools.site.formatting import json_details, number, table, tally, text, value_rows, verdict_badge
from tools.site.plots import lens_training_chart, position_map
from tools.site.raw import CLOSE, OPEN, lift, raw_html, restore
from tools.site.render import GENERATED, main, render
from tools.site.source import highlighted


def shown(path: Path) -> str:
    """A generated page as its reader sees the text: entities (which keep markup out) decoded."""
    return html.unescape(path.read_text(encoding="utf-8"))


def test_pages_for_gates_matrix_and_runs(tmp_path: Path) -> None:
    sha = make_repo(tmp_path)
    make_record(tmp_path, "run-a", sha, {"GATE-INTEG-001": TEST_FAILED}, artifact_text="{}\n")
    written = render(tmp_path)
    out = tmp_path / GENERATED
    assert out / "gates" / "GATE-INTEG-001.md" in written
    gate_page = shown(out / "gates" / "GATE-INTEG-001.md")
    assert "test_integ_001" in gate_page and "gs-v-fail" in gate_page and "run-a" in gate_page
    matrix = shown(out / "gates" / "index.md")
    assert "| [GATE-DATA-001](GATE-DATA-001.md)<br>" in matrix
    assert "2 ACTIVE, 2 of them covered, 2 proven by mutation" in matrix
    run_page = shown(out / "evidence" / "run-a.md")
    assert '<span class="gs-badge gs-v-fail" title="FAIL">FAIL</span>' in run_page
    assert "metrics.jsonl" in run_page
    assert ">proven<" in matrix  # the scratch repository's falsify record proves its gates
    assert "run-a" in shown(out / "evidence" / "index.md")
    assert (out / "schemas" / "evidence.schema.json").is_file()


def test_dashboard_counts_from_the_evidence_and_filters_by_kind_and_status(tmp_path: Path) -> None:
    sha = make_repo(tmp_path)
    make_record(tmp_path, "run-a", sha, {"GATE-INTEG-001": TEST_FAILED})
    make_record(tmp_path, "run-b", sha, passed("GATE-INTEG-001"), minutes=1)
    render(tmp_path)
    out = tmp_path / GENERATED
    dashboard = shown(out / "index.md")
    # run-a and run-b; 2 verdicts: INTEG-001 twice.
    assert "**2 run(s)** (1 completed, 1 halted)" in dashboard
    assert "**2 verdicts**" in dashboard and ">1 FAIL<" in dashboard and ">1 PASS<" in dashboard
    assert "[INTEG-001](gates/GATE-INTEG-001.md)" in dashboard
    assert "(ledger/all--halted.md)" in dashboard and "(ledger/synthetic--all.md)" in dashboard
    halted = shown(out / "ledger" / "all--halted.md")
    assert "run-a" in halted and "run-b" not in halted
    # The newest verdict of GATE-INTEG-001 is run-b's PASS: nothing to attend to for it.
    assert "GATE-INTEG-001](gates/GATE-INTEG-001.md): latest verdict" not in dashboard


def test_the_benchmarks_page_shows_the_newest_record_of_each_place_a_goal_was_measured_in(
    tmp_path: Path,
) -> None:
    """A goal met on a CPU and missed on a GPU shows both rows, the GPU's newest record judged by the
    spec's goal; an older record of the same place is left out, and so is a record older than one
    that names more of its place (a precision its benchmark did not yet record)."""
    sha = make_repo(tmp_path)

    def benchmark(run_id: str, minutes: int, device: str, ratio: float, precision: str | None) -> None:
        path = make_record(tmp_path, run_id, sha, minutes=minutes)
        record = json.loads(path.read_text(encoding="utf-8"))
        record["env"]["device"] = device
        named = {"precision": precision} if precision else {}
        record["metrics"] = {"benchmark": "trace_overhead", "preset": "small", "ratio": ratio, **named}
        path.write_text(json.dumps(record), encoding="utf-8")

    benchmark("gpu-older", 0, "NVIDIA H200", 1.05, "bf16")
    benchmark("cpu-unnamed", 1, "cpu", 2.5, None)
    benchmark("gpu-newer", 2, "NVIDIA H200", 3.6, "bf16")
    benchmark("cpu-fp32", 3, "cpu", 1.1, "fp32")
    render(tmp_path)
    rows = {
        run: line
        for line in shown(tmp_path / GENERATED / "benchmarks.md").splitlines()
        for run in ("gpu-older", "cpu-unnamed", "gpu-newer", "cpu-fp32")
        if f"[{run}]" in line
    }
    assert rows.keys() == {"gpu-newer", "cpu-fp32"}
    assert "cpu · small · fp32" in rows["cpu-fp32"] and ">met<" in rows["cpu-fp32"]
    assert "NVIDIA H200 · small · bf16" in rows["gpu-newer"] and ">not met<" in rows["gpu-newer"]


def test_a_short_prompts_record_is_a_series_of_its_own_on_the_benchmarks_page(tmp_path: Path) -> None:
    """A trace benchmark of a 12-token prompt, newer than the full-context one of the same device,
    preset and precision, stands beside it: it measures tracing's cost per site against a short
    forward, not the goal's full-context prompt, and hides nothing."""
    sha = make_repo(tmp_path)
    for run_id, minutes, tokens, ratio in (("full", 0, 256, 1.1), ("short", 1, 12, 1.8)):
        path = make_record(tmp_path, run_id, sha, minutes=minutes)
        record = json.loads(path.read_text(encoding="utf-8"))
        record["env"]["device"] = "cpu"
        record["metrics"] = {
            "benchmark": "trace_overhead",
            "preset": "small",
            "precision": "fp32",
            "model": {"ctx": 256},
            "tokens": tokens,
            "ratio": ratio,
        }
        path.write_text(json.dumps(record), encoding="utf-8")
    render(tmp_path)
    page = shown(tmp_path / GENERATED / "benchmarks.md").splitlines()
    rows = {run: line for line in page for run in ("full", "short") if f"[{run}]" in line}
    assert rows.keys() == {"full", "short"}
    assert "cpu · small · fp32 |" in rows["full"] and ">met<" in rows["full"]
    assert "cpu · small · fp32 · 12-token prompt" in rows["short"]


def test_verdict_values_are_rows_with_units_and_limits() -> None:
    rows = value_rows(
        {"repeats": 0.16296387902571127, "tokens_per_parameter": 6.372386325921009, "patience": 5},
        {"max_repeats": 4.0, "min_tokens_per_parameter": 20.0, "min_patience_evals": 5, "sigma": 4.0},
    )
    shown = {r.name: (r.value, r.limit) for r in rows}
    assert shown["repeats"] == ("0.163×", "≤ 4×")
    assert shown["tokens_per_parameter"] == ("6.372 tokens/param", "≥ 20 tokens/param")
    assert shown["patience"] == ("5", "≥ 5 evals")
    assert shown["limit sigma"] == ("4 σ", "")  # a threshold bounding no single value has its own row
    many = value_rows({"falsifiers": {f"t{i}": "passed" for i in range(30)} | {"t_last": "failed"}}, {})
    assert [(r.name, r.value) for r in many] == [("falsifiers", "30 passed, 1 failed")]
    assert number(1.0678993764834388e-06) == "1.068e-6" and number(4915200) == "4,915,200"
    assert number(3088816, "B") == "2.95 MiB"


def test_badges_carry_text_and_text_cannot_become_markup() -> None:
    assert ">PASS · stale<" in verdict_badge("PASS", stale=True)
    assert ">N<" in verdict_badge("NOT_RUN", short=True)
    assert ">1 WARN<" in tally(["PASS", "WARN"]) and ">1 PASS<" in tally(["PASS", "WARN"])
    hostile = text("a | b\n<script>*x*</script> [l](u) `c`")
    for markup in ("|", "<script", "*", "[", "`"):
        assert markup not in hostile


# Text a record may hold (a sample, a message, a path), drawn mostly from what Markdown or HTML
# would read as markup, so that a tag, an emphasis, a link or a cell break is met often.
MARKUP_TEXT = st.text(alphabet=st.sampled_from("ab _*`[]()<>&|\\!#~\"'{}:/\n") | st.characters(), max_size=24)
# JSON a record may hold: such text under such keys, nested.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | MARKUP_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(MARKUP_TEXT, inner, max_size=3),
    max_leaves=8,
)


@given(JSON_VALUES)
@example({"_private_": "*x* `c` [l](u) <b>&amp; a | b \\"})
def test_json_in_a_table_cell_reads_back_as_itself_and_stays_out_of_search(value: object) -> None:
    """The <pre> of a verdict's JSON escapes only what is markup mid-line; whatever the record
    holds, Python-Markdown (the site's own extensions) shows that JSON character for character."""
    page = "\n".join(table(["value"], [[json_details(value)]]))
    rendered = markdown.markdown(page, extensions=["tables", "pymdownx.superfences"])
    found = re.findall(
        r"<details class=\"gs-json\" data-search-exclude><summary>JSON</summary><pre>(.*?)</pre>", rendered
    )
    assert len(found) == 1 and "<" not in found[0], rendered  # no tag: the text is all there is
    assert html.unescape(found[0]) == json.dumps(value, sort_keys=True, separators=(", ", ": "))


# The Markdown extensions of mkdocs.yml that touch a page's HTML blocks and tables.
SITE_EXTENSIONS = ["tables", "toc", "pymdownx.superfences"]


def _shown(page_html: str) -> str:
    """HTML as a browser shows it here: the pass-through comments and the newlines between tags
    (which the hook's restored blocks do not repeat) taken out."""
    return re.sub(r">\s+<", "><", page_html.replace(OPEN, "").replace(CLOSE, "")).strip()


@given(JSON_VALUES, st.text(alphabet=st.sampled_from("ab _*`[]<>&|\\#\n"), max_size=40), st.booleans())
def test_a_block_the_hook_passes_through_comes_out_as_markdown_shows_it(
    value: object, source: str, in_table: bool
) -> None:
    """tools/site_raw.py: a record's JSON (in a table cell or on its own line) and a highlighted
    source file, lifted out before Markdown and put back after, give the page Markdown would give
    with them left in, and each block comes out byte for byte as written (a tab too, which
    Markdown would have expanded to spaces: so no tab is drawn for the comparison)."""
    blocks = [json_details(value), highlighted("example.py", source)]
    body = "\n".join(table(["value"], [[blocks[0]]])) if in_table else blocks[0]
    page = f"# Values\n\n{body}\n\nBetween.\n\n{raw_html(blocks[1])}\n\nAfter.\n"
    lifted, lifted_blocks = lift(page)
    assert OPEN not in lifted and CLOSE not in lifted and len(lifted_blocks) == 2
    hooked = restore(markdown.markdown(lifted, extensions=SITE_EXTENSIONS), lifted_blocks)
    assert all(block.removeprefix(OPEN).removesuffix(CLOSE) in hooked for block in blocks)
    assert _shown(hooked) == _shown(markdown.markdown(page, extensions=SITE_EXTENSIONS))


def test_compare_writes_a_page_that_diffs_two_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = make_repo(tmp_path)
    make_record(tmp_path, "run-a", sha, {"GATE-INTEG-001": TEST_FAILED})
    make_record(tmp_path, "run-b", sha, passed("GATE-INTEG-001"), minutes=1)
    assert main(["--root", str(tmp_path), "--compare", "run-a", "run-b"]) == 0
    assert "compare/run-a--run-b.md" in capsys.readouterr().out
    page = shown(tmp_path / GENERATED / "compare" / "run-a--run-b.md")
    assert "1 of 1 gate(s) changed verdict" in page and "gs-v-fail" in page and "gs-v-pass" in page
    assert "(../evidence/run-a.md)" in page and "run-a--run-b.md" in shown(
        tmp_path / GENERATED / "compare" / "index.md"
    )
    assert "[compare with run-b](../compare/run-a--run-b.md)" in shown(
        tmp_path / GENERATED / "evidence" / "run-a.md"
    )


def test_compare_of_an_unknown_run_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_repo(tmp_path)
    assert main(["--root", str(tmp_path), "--compare", "nope", "falsify-scratch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


def test_gate_pages_link_bindings_and_falsifiers_to_the_source(tmp_path: Path) -> None:
    make_repo(tmp_path)
    render(tmp_path)
    out = tmp_path / GENERATED
    page = shown(out / "gates" / "GATE-INTEG-001.md")
    assert "(../source/tests/test_integ.py.md#L-4)" in page  # its falsifier, at its decorator's line
    copy = shown(out / "source" / "tests" / "test_integ.py.md")
    assert 'id="L-4"' in copy and "search:\n  exclude: true" in copy


def test_a_repository_url_links_the_commit_instead_of_a_copy(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "site_config.toml").write_text(
        'repository_url = "https://example.org/gatestack/"\n'
    )
    render(tmp_path)
    head = git(tmp_path, "rev-parse", "HEAD")
    page = shown(tmp_path / GENERATED / "gates" / "GATE-INTEG-001.md")
    assert f"(https://example.org/gatestack/blob/{head}/tests/test_integ.py#L4)" in page
    assert not (tmp_path / GENERATED / "source").exists()


def test_a_malformed_site_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_repo(tmp_path)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "site_config.toml").write_text('compare = [["only-one"]]\n')
    assert main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compare" in err


def test_stale_generated_pages_are_removed(tmp_path: Path) -> None:
    make_repo(tmp_path)
    stale = tmp_path / GENERATED / "evidence" / "gone.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    render(tmp_path)
    assert not stale.exists()


def test_broken_spec_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path)
    (tmp_path / "spec" / "spec.yaml").write_text("spec_id: x\n")
    assert main(["--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_lens_and_patch_records_get_their_heat_maps() -> None:
    """A lens reading and a patch sweep are shown as layer × position grids, a tuned-lens training as
    its per-layer comparison; a trace report gets neither (it has its own heat map)."""
    tokens = ["d", "e", "f"]
    lens = {"mode": "tuned-lens", "tokens": tokens, "per_layer": [{"layer": 0, "kl": [0.5, 1.0, 2.0]}]}
    sweep = {"mode": "patch-sweep", "tokens": tokens, "per_layer": [{"layer": 0, "recovered": [0, 0.2, 1]}]}
    training = {"mode": "lens-train", "per_layer": [{"layer": 0, "kl_logit": 8.4, "kl_tuned": 1.6}]}
    assert "<svg" in position_map(lens) and "KL to the final distribution" in position_map(lens)
    assert "recovered fraction" in position_map(sweep)
    assert "<svg" in lens_training_chart(training)
    assert position_map(training) is None and lens_training_chart(lens) is None
    assert position_map({"mode": "clean", "per_layer": []}) is None
