"""Tamperings the checker derives from what the
record's own artifacts, its committed model or the repository at its commit hold: each is planted in
a copy of a committed record, finished by a perfect forger (every field
the artifacts derive re-derived, every verdict re-judged, every artifact re-hashed), and the
integrity check must name it; the copies as filed pass.

- a mixture's experts restated (every evaluation line routes to as many experts as it has);
- a bandit's cap restated (its warmup shares are the caps' projection of even wants);
- a lens reading's top_k and an ablation's --sample restated (the readings' width, and the
  greedy continuations replayed on the committed model);
- a single trace's prompt restated with as many tokens (its embed site is the committed
  model's embedding rows of the prompt's ids);
- an export's model digest and stored dtypes restated (export.json's files);
- a fine-tune's data tokenizer restated (its init model's tokenizer);
- a distillation's teacher re-pointed to a fine-tune's checkpoint with an invented frozen digest
  (the ledger's memorization record measured that checkpoint's weights otherwise);
- a benchmark option's active parameters restated (the preset, the options matrix and
  ModelConfig's defaults at its commit, counted by contracts.model_shape);
- a speed benchmark's model restated (config_for at its commit, read from the source);
- a benchmark's settings restated: a trace benchmark's shape, a training benchmark's preset, the
  determinism benchmark's steps, runs and compilation, the repeatability benchmark's preset and
  settings (its command line, read with the script's parser at its commit, and the preset it
  names there);
- a benchmark renamed, or its other goals (the names its command line's script files), and a
  determinism leg that switched other than its part (what its name says it switched);
- a LoRA merge's modules restated (the LoRA run of the ledger that wrote the adapters it
  merged puts them on its config's targets);
- a setting no option set, restated: a sample's temperature, a memorization's seed, a prepare's
  filter settings (the command's defaults at the record's commit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import train_throughput
from contracts.evidence import EvidenceRecord
from contracts.model_shape import active_params
from contracts.spec import load_spec
from stack.model.config import ModelConfig
from tests.support.ledger_support import (
    ABLATION_RUN,
    CURRENT_RUN,
    DISTILL_RUN,
    EXPORT_RUN,
    LENS_RUN,
    MEMORIZATION_RUN,
    PREPARE_RUN,
    RECORDS,
    ROOT,
    SAMPLE_RUN,
    SFT_RUN,
    TRACE_RUN,
    Change,
    assert_found,
    findings,
    forger_finished,
    gate,
    log_lines,
    planted,
)
from tools.integrity.check import benchmark_goals
from tools.integrity.settings.bench_argv import line_problems, line_sources, script_of

# Every option of the matrix shaped to the demo model's active parameters (a dirty tree, spec 1.6.0).
OPTIONS_RUN = "bench-train-options-20261122T172734"
SPEED_RUN = "bench-model-20261123T150413"  # benchmarks/model_speed.py on the CPU, a dirty tree
GPU_SPEED_RUN = "bench-model-20261126T174453"  # the same on an H100 (SHAPES["cuda"]), a clean tree
# benchmarks/trace_overhead.py at GPT-2 small's shape (`--preset gpt2 --repeats 5`), a clean tree; and
# at the `small` preset (`--repeats 60`), a dirty one.
TRACE_BENCH_RUN = "bench-trace-20261129T032816"
DIRTY_TRACE_BENCH_RUN = "bench-trace-20261123T150358"
# benchmarks/train_throughput.py on an H100 (`--preset gpt2 --compile`), a dirty tree.
TRAIN_BENCH_RUN = "bench-train-20261127T075906"
# benchmarks/determinism_parts.py on the CPU (`--preset demo --steps 20 --runs 2`), a clean tree.
DETERMINISM_RUN = "bench-determinism-20261128T105754"
# benchmarks/repeatability.py on an H100 (`--preset gpt2 --set train.grad_accum=1 --set
# train.steps=30 ... --modes compiled`), a dirty tree.
REPEAT_RUN = "bench-repeat-20261127T075408"
MERGE_RUN = "lora-merge-20261122T172047"  # `stack lora merge` of the adapters ADAPTER_RUN wrote
ADAPTER_RUN = "sft-lora-20261122"
OTHER_SHA = hashlib.sha256(b"another model").hexdigest()


def _set_in_argv(data: dict[str, Any], old: str, new: str) -> None:
    """A `--set` item and config.toml's line restated alike."""
    argv = data["run"]["argv"]
    assert any(old in word for word in argv), argv
    data["run"]["argv"] = [word.replace(old, new) for word in argv]


def _toml_replaced(run_dir: Path, old: str, new: str) -> None:
    path = run_dir / "config.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_experts_restated_against_the_routed_counts_is_caught(tmp_path: Path) -> None:
    """The run's model.moe_experts doubled on the command line and in config.toml; every evaluation line
    still routes each mixture layer to as many experts as the run had."""
    routed = next(line["routed"] for line in log_lines(RECORDS / CURRENT_RUN) if "routed" in line)
    experts = len(next(iter(routed.values())))

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        _set_in_argv(data, f"model.moe_experts={experts}", f"model.moe_experts={2 * experts}")
        _toml_replaced(run_dir, f"moe_experts = {experts}", f"moe_experts = {2 * experts}")

    found = findings(planted(tmp_path, CURRENT_RUN, forger_finished(plant)))
    assert_found(found, f"to {experts} experts, but config model.moe_experts is {2 * experts}")


def test_a_bandit_cap_restated_against_its_warmup_shares_is_caught(tmp_path: Path) -> None:
    """The base mixture's cap of a source doubled (command line and config.toml); the log's
    shares at step 1 are the bandit's even wants projected onto the cap the run had."""
    caps = json.loads(json.dumps(_record(CURRENT_RUN)["config"]["data"]["caps"]))
    source, cap = next(iter(caps.items()))

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        _set_in_argv(data, f"{source}={cap}", f"{source}={2 * cap}")
        _toml_replaced(run_dir, f"{source} = {cap}", f"{source} = {2 * cap}")

    found = findings(planted(tmp_path, CURRENT_RUN, forger_finished(plant)))
    assert_found(found, "are not the bandit's warmup", "contracts.curriculum.project_shares")


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def test_a_lens_top_k_restated_against_its_readings_is_caught(tmp_path: Path) -> None:
    """Config.top_k doubled (the command line gives none); every reading keeps top_k tokens."""
    top_k = _record(LENS_RUN)["config"]["top_k"]
    found = findings(
        planted(
            tmp_path, LENS_RUN, forger_finished(lambda data, _dir: data["config"].update(top_k=2 * top_k))
        )
    )
    assert_found(found, f"its readings keep the top [{top_k}] token(s)", f"config.top_k is {2 * top_k}")


def test_an_ablation_sample_length_restated_against_its_replay_is_caught(tmp_path: Path) -> None:
    """--sample doubled on the command line and in the config; the committed model's greedy
    continuation of that many tokens is not the text trace.json keeps."""
    sample = _record(ABLATION_RUN)["config"]["sample"]

    def plant(data: dict[str, Any], _dir: Path) -> None:
        argv = data["run"]["argv"]
        argv[argv.index("--sample") + 1] = str(2 * sample)
        data["config"]["sample"] = 2 * sample

    found = findings(planted(tmp_path, ABLATION_RUN, forger_finished(plant)))
    assert_found(
        found, "trace.json: samples.intact is", f"but {2 * sample} greedy token(s) of its checkpoint"
    )


def test_a_single_traces_prompt_restated_against_its_embed_site_is_caught(tmp_path: Path) -> None:
    """The prompt restated (command line and config) as another of as many tokens; the embed
    site's statistics are those of the filed prompt's embedding rows."""
    prompt = _record(TRACE_RUN)["config"]["prompt"]
    other = prompt.swapcase()
    assert other != prompt and len(other.encode()) == len(prompt.encode())

    def plant(data: dict[str, Any], _dir: Path) -> None:
        argv = data["run"]["argv"]
        argv[argv.index("--prompt") + 1] = other
        data["config"]["prompt"] = other

    found = findings(planted(tmp_path, TRACE_RUN, forger_finished(plant)))
    assert_found(found, "trace.json: its embed site's", f"of its prompt {other!r}")


def _export_report(run_dir: Path, change: Any) -> None:
    path = run_dir / "export.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    change(report)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def test_an_export_stored_dtype_restated_against_its_file_size_is_caught(tmp_path: Path) -> None:
    """Export.json's stored dtypes restated as half-width ones; the model file it lists is the
    size of the committed model's parameters at full width."""
    stored = json.loads((RECORDS / EXPORT_RUN / "export.json").read_text(encoding="utf-8"))
    assert stored["stored_dtypes"] == ["float32"]
    plant = forger_finished(
        lambda _data, run_dir: _export_report(run_dir, lambda r: r.update(stored_dtypes=["bfloat16"]))
    )
    found = findings(planted(tmp_path, EXPORT_RUN, plant))
    assert_found(found, "export.json: stored_dtypes is ['bfloat16'], but its model.safetensors of")


def test_an_export_model_digest_restated_is_caught(tmp_path: Path) -> None:
    """Lineage.model_sha256 restated; export.json lists the digest of the model it wrote, and
    the checker derives the field from it (a forger's re-derivation would put the truth back)."""
    found = findings(
        planted(tmp_path, EXPORT_RUN, lambda data, _dir: data["lineage"].update(model_sha256=OTHER_SHA))
    )
    assert_found(found, f'lineage.model_sha256 is "{OTHER_SHA}", but its artifacts derive')


def _temperature(data: dict[str, Any], _dir: Path) -> None:
    data["config"]["temperature"] = round(data["config"]["temperature"] / 2, 3)
    gate(data, "GATE-TRAIN-005")["measured"]["temperature"] = data["config"]["temperature"]


def _seed(data: dict[str, Any], _dir: Path) -> None:
    data["config"]["seed"] += 5


def _oversize(data: dict[str, Any], _dir: Path) -> None:
    data["config"]["filter_settings"]["oversize"]["max_bytes"] //= 8


@pytest.mark.parametrize(
    ("run", "option", "plant", "says"),
    [
        (SAMPLE_RUN, "--temperature", _temperature, "leaves --temperature to the default"),
        (MEMORIZATION_RUN, "--seed", _seed, "leaves --seed to the default"),
        (PREPARE_RUN, "--filters", _oversize, "config.filter_settings.oversize.max_bytes is"),
    ],
    ids=["sample-temperature", "memorization-seed", "prepare-filter-settings"],
)
def test_a_setting_left_to_its_default_restated_is_caught(
    tmp_path: Path, run: str, option: str, plant: Change, says: str
) -> None:
    """A config value no option of the command line set, restated: the command's parser (or default
    file) at the record's commit decides it."""
    assert not any(word.split("=")[0] == option for word in _record(run)["run"]["argv"])
    found = findings(planted(tmp_path, run, forger_finished(plant)))
    assert_found(found, says, "at its commit")


def test_a_fine_tunes_data_tokenizer_restated_against_its_init_model_is_caught(tmp_path: Path) -> None:
    """Data.tokenizer_sha256 of an SFT record (whose data no prepare record made) restated."""
    plant = forger_finished(lambda data, _dir: data["data"].update(tokenizer_sha256=OTHER_SHA))
    found = findings(planted(tmp_path, SFT_RUN, plant))
    assert_found(found, f"data.tokenizer_sha256 is '{OTHER_SHA}', but the committed model")


def test_a_teacher_re_pointed_with_an_invented_frozen_digest_is_caught(tmp_path: Path) -> None:
    """A distillation's teacher re-pointed (command line, places, config.toml, lineage parent
    and its weights file) to the fine-tuned checkpoint MEMORIZATION_RUN measured, and GATE-KD-002's
    digests invented; the memorization record measured those weights' digest otherwise."""
    memorization = _record(MEMORIZATION_RUN)
    tuned = memorization["config"]["models"]["tuned"]
    weights = memorization["checkpoint"]["files"]["model.safetensors"]["sha256"]

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        word = data["run"]["argv"][2]
        old = data["run"]["places"].pop(word)
        data["run"]["argv"][2] = tuned
        data["run"]["places"][tuned] = tuned
        _toml_replaced(run_dir, f'teacher = "{old}"', f'teacher = "{tuned}"')
        parent = next(p for p in data["lineage"]["parents"] if p["role"] == "teacher")
        parent.update(checkpoint_sha256=weights, path=tuned)
        measured = gate(data, "GATE-KD-002")["measured"]
        measured["sha256_before"] = measured["sha256_after"] = OTHER_SHA

    found = findings(planted(tmp_path, DISTILL_RUN, forger_finished(plant)), RECORDS / MEMORIZATION_RUN)
    assert_found(
        found,
        f"gates[GATE-KD-002].measured.sha256_before is {OTHER_SHA[:12]}, but record '{MEMORIZATION_RUN}'",
    )


def test_an_options_active_parameters_restated_are_caught(tmp_path: Path) -> None:
    """One option row's active parameters lowered; the preset, the matrix and the defaults at
    the record's commit shape that option's model."""
    rows = _record(OPTIONS_RUN)["metrics"]["options"]
    index = next(i for i, row in enumerate(rows) if row["active_params"] != row["params"])
    lowered = rows[index]["active_params"] - 1000

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["options"][index]["active_params"] = lowered

    found = findings(planted(tmp_path, OPTIONS_RUN, forger_finished(plant)))
    assert_found(found, f"metrics.options[{index}].active_params is {lowered}, but option")


def test_a_merges_modules_restated_against_the_run_that_wrote_its_adapters_is_caught(tmp_path: Path) -> None:
    """Two modules of a layer the model lacks added to a merge (record and surgery.json), with
    the adapters its parity and unmerge checks count."""
    modules = _record(MERGE_RUN)["metrics"]["modules"]
    layers = 1 + max(int(m.split(".")[1]) for m in modules)
    extra = [f"layers.{layers}.attn.q", f"layers.{layers}.attn.v"]

    def invent(measured: dict[str, Any]) -> None:
        measured["modules"] = measured["modules"] + extra
        measured["parity"]["adapters"] = measured["unmerge"]["adapters"] = len(modules) + len(extra)
        measured["parity"]["mismatched_elements"].update(dict.fromkeys(extra, 0))

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        invent(data["metrics"])
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        invent(report["measured"])
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    found = findings(planted(tmp_path, MERGE_RUN, forger_finished(plant)), RECORDS / ADAPTER_RUN)
    assert_found(
        found, f"metrics.modules is {modules + extra}, but the adapters it merged at", f"sit on {modules}"
    )


@pytest.mark.parametrize("run", [SPEED_RUN, GPU_SPEED_RUN])
def test_a_speed_benchmarks_model_restated_is_caught(tmp_path: Path, run: str) -> None:
    """The timed model's n_kv_heads halved (a claim that grouped-query attention was timed);
    config_for at the record's commit gives every head its own keys and values. The GPU record
    (benchmark model_vs_reference_gpu) is read against SHAPES["cuda"], the key it ran with."""
    heads = _record(run)["metrics"]["config"]["n_kv_heads"]

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["config"]["n_kv_heads"] = heads // 2

    found = findings(planted(tmp_path, run, forger_finished(plant)))
    assert_found(found, f"metrics.config.n_kv_heads is {heads // 2}, but config_for(", f"gives {heads}")


@pytest.mark.parametrize(
    ("run", "field", "value", "said"),
    [
        (
            TRACE_BENCH_RUN,
            "preset",
            "small",
            "metrics.preset is 'small', but its command line asks for 'gpt2'",
        ),
        (TRACE_BENCH_RUN, "repeats", 30, "metrics.repeats is 30, but its command line asks for 5"),
        (TRACE_BENCH_RUN, "batch", 8, "metrics.batch is 8, but its command line asks for 1"),
        (TRACE_BENCH_RUN, "tokens", 256, "metrics.tokens is 256, but its command line's model gives 1024"),
        (
            TRACE_BENCH_RUN,
            "parameters",
            110119680,
            "metrics.parameters is 110119680, but its command line's model gives 88099584",
        ),
        (TRACE_BENCH_RUN, "sites", 81, "metrics.sites is 81, but its command line's model gives 159"),
        (
            TRACE_BENCH_RUN,
            "tile",
            {"elements": 2048, "per_program": 16, "programs": 0},
            "metrics.tile is {'elements': 2048, 'per_program': 16, 'programs': 0}, but its command line asks "
            "for None",
        ),
        (TRAIN_BENCH_RUN, "preset", "demo", "metrics.preset is 'demo', but its command line asks for 'gpt2'"),
        (DETERMINISM_RUN, "steps", 200, "metrics.steps is 200, but its command line asks for 20"),
        (DETERMINISM_RUN, "runs", 3, "metrics.runs is 3, but its command line asks for 2"),
        (DETERMINISM_RUN, "compiled", True, "metrics.compiled is True, but its command line asks for False"),
        (REPEAT_RUN, "preset", "base", "metrics.preset is 'base', but its command line asks for 'gpt2'"),
        (
            REPEAT_RUN,
            "sets",
            ["train.grad_accum=8", "train.steps=30"],
            "but its command line asks for ['train.grad_accum=1', 'train.steps=30']",
        ),
    ],
)
def test_a_benchmarks_settings_restated_are_caught(
    tmp_path: Path, run: str, field: str, value: Any, said: str
) -> None:
    """A benchmark record made to read as other settings: GPT-2 small's trace record as another
    shape (the preset and repeats its line gives, the batch its parser's default gives, the length
    of the preset's ctx, the parameters of GPT-2 small at a 32,768-token vocabulary where the line's
    is 4,096, the `small` preset's sites, a tile of the CUDA statistics kernel its CPU line gave no
    --tile for); the training benchmark's preset; the determinism
    benchmark's steps, runs and a compiled plain loop its line did not ask for; the repeatability
    benchmark's preset and the accumulation its runs were set to."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"][field] = value

    found = findings(planted(tmp_path, run, forger_finished(plant)))
    assert_found(found, said)


@pytest.mark.parametrize(
    ("run", "given", "defaulted"),
    [
        (DIRTY_TRACE_BENCH_RUN, ("repeats", 30, 60), ("batch", 8)),
        (TRAIN_BENCH_RUN, ("preset", "demo", "gpt2"), ("steps", 400)),
    ],
)
def test_a_dirty_benchmark_is_held_to_what_its_line_gives(
    tmp_path: Path, run: str, given: tuple[str, Any, Any], defaulted: tuple[str, Any]
) -> None:
    """A dirty tree may have run another parser than its commit's: a default of the commit's is no
    violation there, what the line gives is (the trace's `--repeats 60` restated as 30, the training
    benchmark's `--preset gpt2` as demo)."""
    (field, value, asked), (other, changed) = given, defaulted

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"][field], data["metrics"][other] = value, changed

    found = findings(planted(tmp_path, run, forger_finished(plant)))
    assert_found(found, f"metrics.{field} is {value!r}, but its command line asks for {asked!r}")
    assert not [line for line in found if f"metrics.{other} is" in line]


# A tile of benchmarks/stats_tiles.py's candidates, as a trace record states it.
TILE_2048x16 = {"elements": 2048, "per_program": 16, "programs": 0}


def _with_tile(data: dict[str, Any], line: dict[str, int], stated: dict[str, int]) -> None:
    """A trace record's line given `--tile` as `line`, its metrics stating `stated`."""
    data["run"]["argv"] = [*data["run"]["argv"], "--tile", f"{line['elements']}x{line['per_program']}"]
    data["metrics"]["tile"] = stated


def test_a_tile_given_where_the_commits_script_takes_none_is_caught(tmp_path: Path) -> None:
    """A record of a commit whose trace benchmark had no --tile, made to read as one cut in a tile."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        _with_tile(data, TILE_2048x16, TILE_2048x16)

    found = findings(planted(tmp_path, TRACE_BENCH_RUN, forger_finished(plant)))
    assert_found(found, "its command line gives --tile, which benchmarks/trace_overhead.py at its commit")


@pytest.mark.parametrize(
    ("stated", "problems"),
    [
        (TILE_2048x16, []),
        (
            {"elements": 2048, "per_program": 1, "programs": 528},
            [
                "metrics.tile is {'elements': 2048, 'per_program': 1, 'programs': 528}, but its command "
                "line asks for {'elements': 2048, 'per_program': 16, 'programs': 0}"
            ],
        ),
    ],
    ids=["as-given", "another"],
)
def test_a_trace_record_states_the_tile_its_line_gives(stated: dict[str, int], problems: list[str]) -> None:
    """Read with today's sources as its commit's (whose script takes --tile): the tile the line gives
    is the one the record must state."""
    data = _record(TRACE_BENCH_RUN)
    _with_tile(data, TILE_2048x16, stated)
    record = EvidenceRecord.model_validate(data)
    script = script_of(record)
    assert script is not None
    blobs = {path: (ROOT / path).read_bytes() for path in line_sources(record)}
    assert line_problems(record, script, blobs) == (problems, [])


# benchmarks/attention_tiles.py's search on an H100: a record that names no benchmark.
TILES_RUN = "bench-attention-tiles-20261122T160045"


@pytest.mark.parametrize(
    ("run", "field", "value", "said"),
    [
        (
            TRACE_BENCH_RUN,
            "benchmark",
            "train_overhead",
            "metrics.benchmark is 'train_overhead', but benchmarks/trace_overhead.py, the script its "
            "command line ran, names 'trace_overhead'",
        ),
        (TRACE_BENCH_RUN, "benchmark", "trace_overheads", "metrics.benchmark is 'trace_overheads'"),
        (TILES_RUN, "benchmark", "attention_triton_vs_sdpa", "names no name"),
        (
            TRAIN_BENCH_RUN,
            "also",
            ["train_peak_memory_ratio", "train_determinism_prices", "train_compile_speedup"],
            "but benchmarks/train_throughput.py states no other goals than",
        ),
        (TRAIN_BENCH_RUN, "also", ["trace_overhead"], "metrics.also is ['trace_overhead']"),
        (TRAIN_BENCH_RUN, "also", [["train_peak_memory_ratio"], {"a": 1}], "states no other goals than"),
    ],
)
def test_a_benchmark_renamed_is_held_to_the_script_its_line_ran(
    tmp_path: Path, run: str, field: str, value: Any, said: str
) -> None:
    """The names that choose what a benchmark record is held to (its derivations, its goals, its
    command line's settings) renamed: to another script's benchmark, to one no script files, a tile
    search given a goal's name, a training record's other goals renamed or swapped for another
    script's."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"][field] = value

    assert_found(findings(planted(tmp_path, run, forger_finished(plant))), said)


def test_the_goals_a_record_states_are_read_past_names_that_are_no_names() -> None:
    """The goals a benchmark record states are read against the spec at its commit past an `also`
    whose items are no benchmark names (a list, an object): those are the name check's finding, and
    the goals the record does name are still compared."""
    data = json.loads((RECORDS / TRAIN_BENCH_RUN / "metadata.json").read_text(encoding="utf-8"))
    data["metrics"]["also"] = [["train_peak_memory_ratio"], {"a": 1}, "train_peak_memory_ratio"]
    record = EvidenceRecord.model_validate(data)
    by_name = {name: goal.model_dump() for name, goal in load_spec().benchmarks.items()}
    stated = benchmark_goals(record, by_name)
    assert stated["goal"] == (data["metrics"]["goal"], by_name["train_overhead"]["goal"])
    assert set(stated) <= {"goal", "goal_peak_memory_ratio"}


def test_a_benchmark_record_of_no_benchmark_script_is_caught(tmp_path: Path) -> None:
    """A benchmark record whose command line ran no script of benchmarks/ is no benchmark's evidence."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["run"]["argv"] = ["tools/trace_timer.py", *data["run"]["argv"][1:]]

    found = findings(planted(tmp_path, TRACE_BENCH_RUN, forger_finished(plant)))
    assert_found(found, "its command line ['tools/trace_timer.py'] runs no benchmark script of")


def _leg(data: dict[str, Any], name: str) -> dict[str, Any]:
    (leg,) = [leg for leg in data["metrics"]["legs"] if leg["leg"] == name]
    return leg


@pytest.mark.parametrize(
    ("plant", "said"),
    [
        (
            lambda data: _leg(data, "cudnn_deterministic")["switches"].update(inductor_deterministic=False),
            "leg 'cudnn_deterministic' differs from leg 'on' in inductor_deterministic, not its part's",
        ),
        (
            lambda data: _leg(data, "cublas_workspace")["switches"].update(cublas_workspace_config=":4096:8"),
            "leg 'cublas_workspace' trained with the switches of leg 'on': it switched nothing",
        ),
        (
            lambda data: _leg(data, "on")["switches"].update(sdpa_backends=["flash", "cudnn"]),
            "leg 'on' trained with switches that let non-deterministic kernels run",
        ),
        (
            lambda data: _leg(data, "off")["switches"].update(deterministic_algorithms=True),
            "leg 'off' trained with deterministic_algorithms=True",
        ),
        (lambda data: _leg(data, "off").update(leg="on"), "leg 'on' is timed 2 times"),
        (
            lambda data: _leg(data, "inductor_deterministic").update(leg="inductor"),
            "leg 'inductor' is no leg",
        ),
    ],
)
def test_a_determinism_leg_is_held_to_the_part_it_names(
    tmp_path: Path, plant: Callable[[dict[str, Any]], None], said: str
) -> None:
    """A part's price is its leg's rate against the every-part-on leg's, so each leg's switches are
    what its name says: a part's leg with another switch changed too, or none, the on leg with a
    non-deterministic SDPA backend, the off leg with determinism on; a leg timed twice or named for
    no part."""
    found = findings(planted(tmp_path, DETERMINISM_RUN, forger_finished(lambda data, _dir: plant(data))))
    assert_found(found, said)


@pytest.mark.parametrize(
    ("run", "plant", "said"),
    [
        (
            TRACE_BENCH_RUN,
            lambda m: m.update(benchmark=["trace_overhead"]),
            "metrics.benchmark is ['trace_overhead']",
        ),
        (TRAIN_BENCH_RUN, lambda m: m.update(also=[{"name": "x"}]), "metrics.also is [{'name': 'x'}]"),
        (DETERMINISM_RUN, lambda m: m["legs"][0].update(leg=["on"]), "a leg is named by no string"),
        (
            DETERMINISM_RUN,
            lambda m: m["legs"][0]["switches"].update(sdpa_backends=4),
            "leg 'on' trained with switches that let non-deterministic kernels run",
        ),
    ],
)
def test_a_benchmark_name_or_leg_of_another_type_is_a_finding_not_a_crash(
    tmp_path: Path, run: str, plant: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Names and switches read as hostile: a list where a name stands, a leg named by a list, a
    backend list that is a number, are each named, and the check goes on."""
    found = findings(planted(tmp_path, run, lambda data, _dir: plant(data["metrics"])))
    assert_found(found, said)


H100 = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu128", "cuda": "12.8"}
CPU = {"device": "cpu", "torch": "2.13.0+cpu", "cuda": None}


@pytest.mark.parametrize(
    ("run", "env", "said"),
    [
        (
            TRACE_BENCH_RUN,
            H100,
            "metrics.statistics_engine is 'c (avx512 openmp)', which no cuda run measures with",
        ),
        (
            DETERMINISM_RUN,
            H100,
            "env.device is 'NVIDIA H100 80GB HBM3', but its command line runs it on 'cpu'",
        ),
        (SPEED_RUN, H100, "metrics.benchmark is 'model_vs_reference_cpu', but env.device"),
        (TRAIN_BENCH_RUN, CPU, "env.device is 'cpu', but its command line runs it on 'cuda'"),
    ],
)
def test_a_benchmark_restated_as_run_on_another_device_is_caught(
    tmp_path: Path, run: str, env: dict[str, Any], said: str
) -> None:
    """A CPU benchmark restated as an H100's (device, torch build and CUDA together, so the env agrees
    with itself), or an H100's as the CPU's, contradicts what it measured there (a trace's engines,
    a model benchmark's name) and the device its command line ran it on."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(env)

    assert_found(findings(planted(tmp_path, run, forger_finished(plant))), said)


def test_the_active_parameter_rule_is_the_benchmarks() -> None:
    """contracts.model_shape.active_params counts what benchmarks/train_throughput.active_params
    counts of the models the options benchmark shapes (dense, each option, combinations)."""
    base = {"vocab": 257, "d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "ctx": 128}
    for settings in (
        {"ffn_hidden": 352},
        {"ffn_hidden": 176, "moe_experts": 4, "moe_top_k": 2},
        {"ffn_hidden": 144, "moe_experts": 4, "moe_top_k": 1, "moe_shared_expert": True, "diff_attn": True},
        {"ffn_hidden": 832, "mod_every": 2, "mod_capacity": 0.5},
    ):
        config = ModelConfig(**base, **settings)
        assert active_params(config.model_dump()) == pytest.approx(
            train_throughput.active_params(config), rel=1e-12
        )


@pytest.mark.parametrize(
    "run",
    [
        OPTIONS_RUN,
        SPEED_RUN,
        MERGE_RUN,
        TRACE_RUN,
        SFT_RUN,
        DISTILL_RUN,
        CURRENT_RUN,
        LENS_RUN,
        ABLATION_RUN,
        EXPORT_RUN,
        SAMPLE_RUN,
        MEMORIZATION_RUN,
        PREPARE_RUN,
    ],
)
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda *_: None)) == []
