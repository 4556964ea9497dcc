"""The text and the tokens a record states, derived from its model's tokenizer.

What a command made of a text by a tokenizer is a function of the text and the tokenizer alone, and
the tokenizer is the checkpoint's the command read. A record restates those tokens and texts, and a
forger made them agree only with each other: a trace's token count with its config digest; a
sample's text that its drawn ids do not decode to, its prompt
restated, its prompt's token count changed; a lens reading's top-1 label that its token id does not
decode to. Here the checkpoint the command line names is
found (the word under this repository, where the run resolved it to the same path,
`checkpoint_reads.in_repository`; else where the run resolved it), its tokenizer rebuilt by the
stack's own code (once per process and checkpoint: tools/integrity/models/committed_models.read_model), and:

* a trace's, a patching's or a lens reading's `config.tokens` is the count its prompt encodes to;
  the `tokens` trace.json keeps are each of those ids decoded on its own; a patching's target and
  foil are the one id their text on the command line encodes to;
* a lens reading's top-1 label of each layer and position (trace.json's `per_layer`) is its
  reading's top id decoded;
* a sample's `prompt_tokens` (sample.json) are the ids `stack sample` continued
  (`stack.cli.sample.prompt_ids`), and its text is the prompt followed by its drawn ids decoded
  (`stack.cli.sample.sample_text`).

An ablation's greedy continuations are replayed on the named checkpoint, and so are its intact
and ablated forwards: trace.json's logits comparison and effect numbers are held to them
(tools/integrity/models/forward_replays.py says to what tolerance, and from which spec version).

(An evaluation's token counts are derived with the rest of its scored text:
tools/integrity/models/scored_text.py.)

A checkpoint no longer where the record names it is not checked here (the token axis of the traced
sites still is, contracts.derive.trace.traced_tokens); one that is there and does not read is
named.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch

from contracts.derive.reports import version_key
from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.reading import read_json
from contracts.selection import site_widths
from contracts.site_statistics import named, statistics, unlike
from contracts.spec import Spec
from stack.cli.sample import RESULT_FILE, prompt_ids, sample_text
from stack.data.tokenizer import Tokenizer
from stack.model.gpt import GPT
from stack.trace.ablation import greedy_sample
from stack.trace.calibrate import TracePath
from stack.trace.modes import ablation
from tools.integrity.models.checkpoint_reads import in_repository
from tools.integrity.models.committed_models import UNREADABLE, ReadModel, read_model
from tools.integrity.models.forward_replays import (
    ABLATION_REPLAY_SINCE,
    MISSING,
    REFUSED,
    replay_differences,
    replay_tolerances,
)
from tools.integrity.settings.argv_record import given

TOKEN_KINDS = frozenset({"trace", "patch", "lens", "sample"})
TRACE_REPORT = "trace.json"
LENS_MODES = ("tuned-lens", "logit-lens")
# The traces whose `embed` site is the committed model's embedding of the prompt on config.path_a
# (a comparison's second path, a patching's corrupted prompt, are another's).
EMBED_MODES = ("single", "ablation")
# What an ablation's replay holds of trace.json: every key its two forwards alone decide (the
# samples are held by their own replay, the kept traces' sites by their widths and the embed site).
ABLATION_REPLAYED = ("logits", "mean_kl", "argmax_changed", "positions", "per_layer")


def _checkpoint(record: EvidenceRecord, root: Path) -> Path | None:
    """The checkpoint the record's command line names, where it can still be read; else None."""
    word = (given(record.run.argv or []) or {}).get("path")
    if word is None:
        return None
    for candidate in (in_repository(record, str(word), root), (record.run.places or {}).get(str(word))):
        if candidate is None or not Path(candidate).exists():
            continue
        try:
            return read_model(Path(candidate)).checkpoint
        except UNREADABLE:
            continue
    return None


def _result(run_dir: Path, name: str) -> dict[str, Any] | None:
    """A result file of the run directory as a table; None where it is missing (the artifact checks
    name that) or holds no table (one that does not read raises `Unreadable`)."""
    if not (run_dir / name).is_file():
        return None
    report = read_json(run_dir / name, run_dir)
    return report if isinstance(report, dict) else None


def trace_token_problems(
    record: EvidenceRecord, run_dir: Path, spec: Spec, root: Path = REPO_ROOT
) -> list[str]:
    """What a trace, patching, lens or sample record states of its text and tokens, against the
    named checkpoint's tokenizer (module doc)."""
    config = record.config if isinstance(record.config, dict) else {}
    prompt = config.get("prompt")
    if record.run.kind not in TOKEN_KINDS or not isinstance(prompt, str):
        return []
    checkpoint = _checkpoint(record, root)
    if checkpoint is None:
        return []
    try:
        tokenizer = read_model(checkpoint).tokenizer
    except UNREADABLE as exc:
        return [f"the tokenizer of {checkpoint}, which its command line names, cannot be rebuilt: {exc}"]
    if record.run.kind == "sample":
        return _sample_problems(_result(run_dir, RESULT_FILE), config, tokenizer)
    ids = tokenizer.encode_prompt(prompt)
    tokens = config.get("tokens")
    problems = []
    if isinstance(tokens, int) and tokens != len(ids):
        problems.append(
            f"config.tokens is {tokens}, but the tokenizer of {checkpoint} makes its prompt {prompt!r} "
            f"{len(ids)} token(s)"
        )
    report = _result(run_dir, TRACE_REPORT) or {}
    pieces = [tokenizer.text_of([i]) for i in ids]  # each prompt token decoded once per record
    if isinstance(report.get("tokens"), list) and report["tokens"] != pieces:
        problems.append(
            f"{TRACE_REPORT}: its tokens are {report['tokens']}, but the tokenizer of {checkpoint} makes "
            f"its prompt {pieces}"
        )
    if record.run.kind == "patch":
        problems += _patch_token_problems(record, config, tokenizer)
    if report.get("mode") == "ablation":
        problems += _sample_replay_problems(config, report, read_model(checkpoint), ids)
        problems += _ablation_replay_problems(record, config, report, read_model(checkpoint), ids, spec)
    rtol = float(spec.threshold("GATE-TRACE-002", "statistics_rtol"))
    problems += _embed_problems(config, report, read_model(checkpoint), ids, rtol)
    problems += _site_shape_problems(report, read_model(checkpoint).state["config"]["model"], len(ids))
    return (
        problems + _lens_label_problems(report, tokenizer) + _lens_width_problems(config, report, tokenizer)
    )


def _sample_problems(
    report: dict[str, Any] | None, config: dict[str, Any], tokenizer: Tokenizer
) -> list[str]:
    """sample.json's prompt token count and text, against the ids `stack sample` continued and the
    text its drawn ids make after the prompt (up to the first end-of-text unless config.ignore_eot;
    a record before spec 1.33.0 states none and showed every draw)."""
    if report is None:
        return []
    prompt, ignore_eot = config["prompt"], config.get("ignore_eot") is not False
    problems = []
    counted, drawn, text = report.get("prompt_tokens"), report.get("drawn"), report.get("text")
    ids = prompt_ids(tokenizer, prompt)
    if counted is not None and counted != len(ids):
        problems.append(
            f"{RESULT_FILE}: prompt_tokens is {counted!r}, but `stack sample` continues config.prompt "
            f"{prompt!r} as {len(ids)} token(s) of its checkpoint's tokenizer"
        )
    stated = report.get("prompt_ids")  # kept since prompts are encoded with their special tokens
    if stated is not None and stated != ids:
        problems.append(
            f"{RESULT_FILE}: prompt_ids are {_short(stated)}, but `stack sample` continues config.prompt "
            f"{prompt!r} as {_short(ids)} with its checkpoint's tokenizer"
        )
    if isinstance(drawn, list) and all(isinstance(i, int) for i in drawn) and text is not None:
        made = sample_text(tokenizer, prompt, drawn, ignore_eot)
        if text != made:
            problems.append(
                f"{RESULT_FILE}: its text is {_short(text)}, but config.prompt and the ids it drew make "
                f"{_short(made)}"
            )
    return problems


def _short(text: Any, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _patch_token_problems(record: EvidenceRecord, config: dict[str, Any], tokenizer: Tokenizer) -> list[str]:
    """A patching's target and foil (config.target, config.foil): the one id the text its command line
    gives for each encodes to (`stack trace --target TOKEN`)."""
    options = given(record.run.argv or []) or {}
    problems = []
    for name in ("target", "foil"):
        word, stated = options.get(name), config.get(name)
        if not isinstance(word, str):
            continue
        ids = tokenizer.encode_prompt(word)
        if ids != [stated]:
            problems.append(
                f"config.{name} is {stated!r}, but its command line's --{name} {word!r} is {ids} for the "
                "tokenizer of its checkpoint"
            )
    return problems


def _lens_width_problems(config: dict[str, Any], report: dict[str, Any], tokenizer: Tokenizer) -> list[str]:
    """A lens reading keeps, at every layer and position, the top config.top_k tokens of its logits
    (`stack.lens.readout.read`: k = min(top_k, the logits' width), and the logits are at least the
    tokenizer's vocabulary wide): a reading of 5 restated as top_k 10 is caught."""
    top_k = config.get("top_k")
    if report.get("mode") not in LENS_MODES or not isinstance(top_k, int) or isinstance(top_k, bool):
        return []
    widths = sorted(
        {
            len(top)
            for reading in report.get("readings") or []
            if isinstance(reading, dict)
            for top in reading.get("top") or []
            if isinstance(top, list)
        }
    )
    fits = widths == [top_k] or (
        top_k > tokenizer.vocab_size and len(widths) == 1 and tokenizer.vocab_size <= widths[0] <= top_k
    )
    if not widths or fits:
        return []
    return [
        f"{TRACE_REPORT}: its readings keep the top {widths} token(s) of each position, but config.top_k "
        f"is {top_k}"
    ]


def _trace_path(path_a: str, model: ReadModel) -> TracePath:
    """The committed model's path config.path_a describes (`LABEL (backend, dtype)`,
    stack.trace.calibrate.TracePath.describe); BadInput where the description names none."""
    described = re.fullmatch(r".* \(([\w-]+), (\w+)\)", path_a)
    if described is None:
        raise BadInput(f"config.path_a {path_a!r} names no backend and dtype")
    return TracePath(model.trained.model, described[1], described[2], "replay")


@functools.lru_cache(maxsize=64)
def _path_model(path_a: str, model: ReadModel) -> GPT:
    """The committed model on the path config.path_a describes, as `stack trace` ran it, built once
    per process for each model (`read_model` gives one ReadModel per checkpoint content) and only
    read after."""
    return _trace_path(path_a, model).model()


def _embed_problems(
    config: dict[str, Any], report: dict[str, Any], model: ReadModel, ids: list[int], rtol: float
) -> list[str]:
    """The `embed` site a trace kept (a single trace's, each of an ablation's two) holds the
    committed model's embedding of the prompt's ids on config.path_a: its statistics are
    contracts.site_statistics' of that lookup, by GATE-TRACE-002's rule for a sampled site
    (contracts.site_statistics.unlike with its statistics_rtol: the exact ones equal, the moments
    within the kernels' summation; a single trace's prompt restated with as many tokens moves
    min and max; an embedding lookup, no forward)."""
    traces = [report.get("trace"), *(report.get("traces") or {}).values()]
    kept = [
        site.get("stats")
        for trace in traces
        if isinstance(trace, dict)
        for site in trace.get("sites") or []
        if isinstance(site, dict) and site.get("name") == "embed" and isinstance(site.get("stats"), dict)
    ]
    if not kept or report.get("mode") not in EMBED_MODES:
        return []
    try:
        path = _path_model(str(config.get("path_a")), model)
        with torch.no_grad():
            looked_up = named(statistics(path.embed(torch.tensor([ids], dtype=torch.long))).tolist())
    except UNREADABLE as exc:
        return [f"its embed site cannot be derived on {config.get('path_a')}: {exc}"]
    problems = []
    for stats in kept:
        differing = [problem.split()[0] for problem in unlike(stats, looked_up, rtol)]
        if differing:
            problems.append(
                f"{TRACE_REPORT}: its embed site's {', '.join(differing)} are not those of the embedding "
                f"rows of its prompt {config.get('prompt')!r} in its checkpoint ({_short(looked_up)})"
            )
    return problems


def _site_shape_problems(report: dict[str, Any], model: dict[str, Any], tokens: int) -> list[str]:
    """Each kept site whose width the checkpoint's [model] table decides (contracts.selection.site_widths)
    is (1, tokens, width) and counts that many elements (not layers.0.k restated 128 wide in a
    model without grouped-query attention)."""
    widths = site_widths(model)
    problems = []
    for trace in (report.get("trace"), *(report.get("traces") or {}).values()):
        for site in trace.get("sites") or [] if isinstance(trace, dict) else []:
            width = widths.get(site.get("name")) if isinstance(site, dict) else None
            if width is None:
                continue
            count = (site.get("stats") or {}).get("count")
            if site.get("shape") != [1, tokens, width] or count != tokens * width:
                problems.append(
                    f"{TRACE_REPORT}: site {site['name']} is {site.get('shape')} ({count} elements), but its "
                    f"checkpoint's model makes it {[1, tokens, width]} ({tokens * width})"
                )
    return problems


@functools.lru_cache(maxsize=64)
def _greedy(
    model: ReadModel, path_a: str, ids: tuple[int, ...], tokens: int, sites: tuple[str, ...]
) -> tuple[int, ...]:
    """`greedy_sample` of the committed model on the path `path_a` describes, drawn once per process
    for each model, prompt and ablation: `read_model` gives one ReadModel per checkpoint content, so
    the draw is a function of its key, and a test suite checking copies of the ledger again and again
    replays each committed ablation once."""
    path = _path_model(path_a, model)
    return tuple(greedy_sample(path, torch.tensor([list(ids)], dtype=torch.long), tokens, sites))


def _sample_replay_problems(
    config: dict[str, Any], report: dict[str, Any], model: ReadModel, ids: list[int]
) -> list[str]:
    """An ablation's greedy continuations (`--sample N`, trace.json's `samples`) replayed: the named
    checkpoint on the path config.path_a describes continues the prompt N tokens greedily, intact
    and with config.ablate zeroed (`stack.trace.ablation.greedy_sample`, as `stack trace` drew
    them), and the texts are those ids decoded (not --sample 8 restated as 16). A few
    forwards of the committed model on the CPU."""
    sample, samples = config.get("sample"), report.get("samples")
    if not isinstance(sample, int) or isinstance(sample, bool) or not isinstance(samples, dict):
        return []
    if sample == 0 or not samples:
        return (
            []
            if sample == 0 and not samples
            else [f"{TRACE_REPORT}: it keeps samples {sorted(samples)}, but config.sample is {sample}"]
        )
    try:
        sites = tuple(config.get("ablate") or ())
        drawn = {
            "intact": _greedy(model, str(config.get("path_a")), tuple(ids), sample, ()),
            "ablated": _greedy(model, str(config.get("path_a")), tuple(ids), sample, sites),
        }
    except UNREADABLE as exc:
        return [f"its samples cannot be replayed on {config.get('path_a')}: {exc}"]
    return [
        f"{TRACE_REPORT}: samples.{name} is {_short(samples.get(name))}, but {sample} greedy token(s) of its "
        f"checkpoint make {_short(text)}"
        for name, text in ((k, model.tokenizer.text_of(v)) for k, v in drawn.items())
        if samples.get(name) != text
    ]


@functools.lru_cache(maxsize=64)
def _ablation(model: ReadModel, path_a: str, ids: tuple[int, ...], sites: tuple[str, ...]) -> dict[str, Any]:
    """What `stack trace --ablate` reports of its intact and ablated forwards
    (`stack.trace.modes.ablation`, the function that wrote trace.json, without a sample): the
    ABLATION_REPLAYED keys of its payload, made once per process for each model, path, prompt and
    ablation."""
    idx = torch.tensor([list(ids)], dtype=torch.long)
    payload = ablation(_trace_path(path_a, model), idx, sites, [], 0, model.tokenizer.text_of).payload()
    return {key: payload[key] for key in ABLATION_REPLAYED}


def _ablation_replay_problems(
    record: EvidenceRecord,
    config: dict[str, Any],
    report: dict[str, Any],
    model: ReadModel,
    ids: list[int],
    spec: Spec,
) -> list[str]:
    """An ablation's logits comparison and effect numbers in trace.json (from ABLATION_REPLAY_SINCE),
    against the two forwards of its committed checkpoint made again
    (tools/integrity/models/forward_replays.py: logits.failing and logits.cosine restated are caught)."""
    if version_key(record.spec.version) < version_key(ABLATION_REPLAY_SINCE):
        return []
    path_a, sites = str(config.get("path_a")), tuple(config.get("ablate") or ())
    try:
        replayed = _ablation(model, path_a, tuple(ids), sites)
    except REFUSED as exc:
        return [f"{TRACE_REPORT}: its ablation of {list(sites)} cannot be replayed on {path_a}: {exc}"]
    how = "(its checkpoint's intact and ablated forwards again, stack.trace.modes.ablation)"
    tolerances = replay_tolerances(spec)
    return [
        f"{TRACE_REPORT}: {problem} {how}"
        for key, value in replayed.items()
        for problem in replay_differences(report.get(key, MISSING), value, key, tolerances)
    ]


def _lens_label_problems(report: dict[str, Any], tokenizer: Tokenizer) -> list[str]:
    """A lens reading's per-layer top-1 labels (trace.json's `per_layer`, each layer's before the
    final reading), against its readings' top ids decoded."""
    rows = [r for r in report.get("per_layer") or [] if isinstance(r, dict) and "top1" in r]
    readings = [r for r in report.get("readings") or [] if isinstance(r, dict)]
    problems = []
    for row, reading in zip(rows, readings, strict=False):
        tops = reading.get("top") if isinstance(reading.get("top"), list) else []
        ids = [_first_id(t) for t in tops]
        labels = row["top1"] if isinstance(row["top1"], list) else []
        for position, (label, top) in enumerate(zip(labels, ids, strict=False)):
            if isinstance(top, int) and label != (decoded := tokenizer.text_of([top])):
                problems.append(
                    f"{TRACE_REPORT}: per_layer[{row.get('layer')}].top1[{position}] is {label!r}, but its "
                    f"reading's top token {top} decodes to {decoded!r}"
                )
    return problems


def _first_id(top: Any) -> Any:
    """The id of the likeliest token of one position's top list ([[id, probability], ...])."""
    return top[0][0] if isinstance(top, list) and top and isinstance(top[0], list) and top[0] else None
