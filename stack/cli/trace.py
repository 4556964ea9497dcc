"""`stack trace`: where, layer and sub-operation, a model or a backend first goes wrong.

    stack trace CKPT --prompt TEXT                         table, first anomaly and its cascade
    stack trace CKPT --prompt TEXT --against CKPT_B        first site where B diverges from A
    stack trace CKPT --prompt TEXT --backend-b triton      the same weights under another backend
    stack trace CKPT --prompt TEXT --dtype-b bf16          ... or in another dtype
    stack trace CKPT --prompt TEXT --dump A.json           a dump to compare elsewhere
    stack trace --compare A.json B.json                    two dumps, made anywhere
    stack trace CKPT --prompt TEXT --ablate layers.1.attn_out [--sample 32]
    stack trace CKPT --prompt CLEAN --patch CORRUPTED --target TOKEN --patch-site layers.1.output
    stack trace CKPT --prompt CLEAN --patch CORRUPTED --target TOKEN --patch-sweep output

Exit 0: clean / the paths agree / ablation or patching done; 3: an anomaly, a divergence or a
NaN/Inf producer was found, or a gate fired; 2: bad input. Every trace writes an evidence record
(stack.trace.record), of run kind `patch` for patching. See docs/trace.md for a walk through a
bisection and a patching sweep.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.cli import values

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from contracts.evidence import DataRef
    from contracts.ledger import Ledger
    from stack.data.tokenizer import Tokenizer
    from stack.model.config import ModelConfig
    from stack.model.gpt import GPT
    from stack.trace.modes import Result
    from stack.trace.sites import Layout
    from stack.train.trained import Trained

DTYPE_NAMES = ("fp32", "bf16", "fp16", "fp64")
BACKENDS = ("naive", "sdpa", "triton")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `stack trace` and its options (grouped: what to show, path B, evidence)."""
    parser = sub.add_parser(
        "trace",
        help="trace a forward site by site: anomalies, bisection between two paths, dumps, ablation",
        description="Trace a forward site by site; name the first site where things go wrong.",
    )
    parser.add_argument(
        "path", type=values.utf8_path, nargs="?", metavar="CKPT", help="run directory or checkpoint (path A)"
    )
    parser.add_argument(
        "--prompt", type=values.utf8_text, help="text to trace (encoded by the checkpoint's tokenizer)"
    )
    parser.add_argument("--device", type=values.device, default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--backend", choices=BACKENDS, help="attention backend of A (default: the checkpoint's)"
    )
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32", help="dtype of A")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check GATE-TRACE-002's identities on every row and the statistics on whole sites "
        "(default: on the spec's samples, a fraction of the cost)",
    )
    show = parser.add_argument_group("what to show")
    show.add_argument("--layers", metavar="A-B", help="only these layers, e.g. 2-5 (inclusive)")
    show.add_argument("--sites", metavar="GLOB", help="only sites matching, e.g. 'ffn_*' or 'layers.3.*'")
    show.add_argument("--stat", default="std", help="statistic shown in the table (default std)")
    show.add_argument("--json", type=values.utf8_path, metavar="OUT", help="write the full report as JSON")
    show.add_argument("--csv", type=values.utf8_path, metavar="OUT", help="write one row per site as CSV")
    two = parser.add_argument_group("bisection: path B")
    two.add_argument("--against", type=values.utf8_path, metavar="CKPT_B", help="another checkpoint")
    two.add_argument("--backend-b", choices=BACKENDS, help="A's weights under this attention backend")
    two.add_argument("--dtype-b", choices=DTYPE_NAMES, help="A's weights in this dtype")
    two.add_argument(
        "--dump", type=values.utf8_path, metavar="FILE", help="write this trace as a dump (single path only)"
    )
    two.add_argument(
        "--compare", type=values.utf8_path, nargs=2, metavar=("A.json", "B.json"), help="bisect two dumps"
    )
    two.add_argument("--atol", action="append", default=[], metavar="[GLOB=]V", help="absolute tolerance")
    two.add_argument("--rtol", action="append", default=[], metavar="[GLOB=]V", help="relative tolerance")
    two.add_argument(
        "--shadow", action="store_true", help="feed B's layer i with A's input: local vs inherited"
    )
    parser.add_argument(
        "--stop-on-nonfinite", action="store_true", help="name the first site producing NaN/Inf"
    )
    parser.add_argument("--ablate", action="append", default=[], metavar="SITE", help="zero this site")
    parser.add_argument(
        "--sample",
        type=values.natural,
        default=0,
        metavar="N",
        help="with --ablate: greedy N tokens both ways",
    )
    patch = parser.add_argument_group("activation patching: from --prompt (clean) into --patch")
    patch.add_argument(
        "--patch",
        type=values.utf8_text,
        metavar="CORRUPTED",
        help="the corrupted prompt, as long as --prompt",
    )
    patch.add_argument(
        "--target", type=values.utf8_text, metavar="TOKEN", help="the token whose score returns"
    )
    patch.add_argument(
        "--foil", type=values.utf8_text, metavar="TOKEN", help="score logit(target) - logit(foil), not log p"
    )
    patch.add_argument("--patch-site", metavar="SITE", help="patch this site, e.g. layers.1.output")
    patch.add_argument(
        "--patch-position",
        type=values.natural,
        metavar="N",
        help="with --patch-site: this position (default last)",
    )
    patch.add_argument(
        "--patch-sweep", metavar="KIND", help="patch site KIND (e.g. output) at every layer × position"
    )
    add_record_options(
        parser, "replace an existing --json/--csv/--dump FILE or --out DIR, but only one a trace wrote"
    )
    parser.set_defaults(func=run)


def add_record_options(parser: argparse.ArgumentParser, force_help: str) -> None:
    """Where the evidence record of a trace-like command goes (--out or --evidence-dir, never both:
    `stack.trace.record.check_one_place`), and --force, whose scope the command says."""
    where = parser.add_argument_group("evidence")
    where.add_argument(
        "--out", type=values.utf8_path, metavar="DIR", help="write the record here (default RUN/traces/ID)"
    )
    where.add_argument(
        "--evidence-dir", type=values.utf8_path, metavar="DIR", help="write the record to DIR/<run-id>/"
    )
    where.add_argument("--force", action="store_true", help=force_help)


def _validate(args: argparse.Namespace) -> None:
    """Refuse option combinations that would be ignored or cannot work."""
    from contracts.errors import BadInput
    from stack.trace.record import check_one_place
    from stack.trace.sites import STATS

    check_one_place(args.out, args.evidence_dir)
    b_path = args.against is not None or args.backend_b is not None or args.dtype_b is not None
    if args.compare is not None:
        if args.path is not None or args.prompt is not None or b_path or args.dump or args.ablate:
            raise BadInput(
                "--compare A.json B.json reads everything from the dumps; give no CKPT, --prompt or path B"
            )
    elif args.path is None:
        raise BadInput(
            "give a checkpoint to trace (stack trace CKPT --prompt TEXT), or --compare A.json B.json"
        )
    elif not args.prompt:
        raise BadInput("give a non-empty --prompt TEXT to trace")
    if args.dump is not None and b_path:
        raise BadInput("--dump writes one path; dump A and B separately, then --compare them")
    if args.shadow and not b_path:
        raise BadInput("--shadow needs a path B in this process (--against, --backend-b or --dtype-b)")
    if (args.atol or args.rtol) and not (b_path or args.compare):
        raise BadInput(
            "--atol/--rtol apply to a bisection; add --against, --backend-b, --dtype-b or --compare"
        )
    if args.ablate and (b_path or args.dump):
        raise BadInput("--ablate compares a path with itself ablated; drop path B and --dump")
    if args.sample and not args.ablate:
        raise BadInput("--sample shows an ablation's effect on text; add --ablate SITE")
    if args.sample < 0:
        raise BadInput(f"--sample {args.sample} is negative")
    if args.stat not in STATS:
        raise BadInput(f"--stat {args.stat!r} is not a statistic; use one of: {', '.join(STATS)}")
    _validate_patch(args, b_path)


def _validate_patch(args: argparse.Namespace, b_path: bool) -> None:
    """Patching needs a corrupted prompt, a target and one site or a sweep, and no other mode."""
    from contracts.errors import BadInput

    options = (args.target, args.foil, args.patch_site, args.patch_position, args.patch_sweep)
    if args.patch is None:
        if any(o is not None for o in options):
            raise BadInput(
                "--target, --foil, --patch-site, --patch-position and --patch-sweep need --patch CORRUPTED"
            )
        return
    if args.compare is not None or b_path or args.dump or args.ablate or args.stop_on_nonfinite:
        raise BadInput(
            "--patch runs one model on two prompts; drop path B, --compare, --dump, --ablate and "
            "--stop-on-nonfinite"
        )
    if not args.target:
        raise BadInput("--patch needs --target TOKEN, the token whose score the patch should recover")
    if (args.patch_site is None) == (args.patch_sweep is None):
        raise BadInput(
            "--patch needs one of --patch-site SITE (one activation) or --patch-sweep KIND (a grid)"
        )
    if args.patch_position is not None and args.patch_site is None:
        raise BadInput("--patch-position goes with --patch-site; a sweep covers every position")


def _names(args: argparse.Namespace, n_layers: int, layout: Layout) -> list[str]:
    from stack.model.names import parse_layers
    from stack.trace.sites import select, site_names

    layers = parse_layers(args.layers, n_layers) if args.layers else None
    return select(site_names(n_layers, layout), layers, args.sites)


def _from_checkpoint(args: argparse.Namespace, checkpoint: Path, config: dict[str, Any]) -> Result:
    """Load path A (and B), encode the prompt, run the mode the options ask for."""
    import torch

    from contracts.errors import BadInput
    from stack.trace import modes
    from stack.trace.ablation import check_ablated
    from stack.trace.calibrate import TracePath
    from stack.trace.compare import check_tolerances, parse_rules
    from stack.trace.sites import layout_for
    from stack.train.trained import load_trained

    device = torch.device(args.device)  # this machine has it: stack.cli asked (values.absent_device)
    # Loaded on a path that runs anywhere: every path of the trace is a copy switched to its own
    # backend (TracePath), checked here first with the option that names it.
    a = load_trained(checkpoint, device, attention="sdpa")
    check_backend("--backend", args.backend, a.config.model, device, checkpoint)
    ids = a.tokenizer.encode_prompt(args.prompt)
    if len(ids) > a.config.model.ctx - args.sample:
        room = a.config.model.ctx - args.sample
        raise BadInput(f"the prompt is {len(ids)} tokens; the model takes {room} here: shorten --prompt")
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    label = str(args.path)
    path_a = TracePath(a.model, args.backend or a.config.model.attention, args.dtype, label)
    names = _names(args, a.config.model.n_layers, layout_for(a.config.model))
    config.update(prompt=args.prompt, tokens=len(ids), path_a=path_a.describe())
    if args.patch is not None:
        result = _patching(args, a, path_a.model(), idx, config)
    elif args.ablate:
        config.update(ablate=args.ablate, sample=args.sample)
        result = modes.ablation(path_a, idx, tuple(args.ablate), names, args.sample, a.tokenizer.text_of)
        check_ablated(args.ablate, args.sample, result.payload())  # GATE-TRACE-003, check ablated
    elif args.against or args.backend_b or args.dtype_b:
        weights, label_b, model_b = a.model, "same weights", a.config.model
        if args.against is not None:
            b = load_trained(args.against, device, attention="sdpa")
            if b.tokenizer.identity != a.tokenizer.identity:
                raise BadInput("the two checkpoints use different tokenizers; the prompt would differ")
            check_bisectable(a.config.model, b.config.model, args.against)
            weights, label_b, model_b = b.model, str(args.against), b.config.model
        backend_b = args.backend_b or path_a.backend
        check_backend("--backend-b", backend_b, model_b, device, None)
        path_b = TracePath(weights, backend_b, args.dtype_b or path_a.dtype, label_b)
        config.update(path_b=path_b.describe(), shadow=args.shadow, atol=args.atol, rtol=args.rtol)
        rules = parse_rules(args.atol, args.rtol)
        result = modes.two_paths(path_a, path_b, idx, names, rules, args.shadow, args.stop_on_nonfinite)
        check_tolerances(args.atol, args.rtol, result.payload())  # GATE-TRACE-003, check tolerance
    else:
        result = modes.single(path_a, idx, names, args.stat, args.stop_on_nonfinite, args.dump)
        config.update(stat=args.stat)
    _check_selection(args, result, a.config.model.n_layers, layout_for(a.config.model))
    return result


def _check_selection(args: argparse.Namespace, result: Result, n_layers: int, layout: Layout) -> None:
    """GATE-TRACE-002 (check selection): the sites the report keeps are those --layers and --sites
    select of every site of the model, by contracts.selection's rule."""
    from stack.trace.sites import site_names
    from stack.trace.tracer import check_selection

    if args.patch is None:  # a patching keeps no trace (GATE-PATCH-002 judges its sites)
        check_selection(result.payload(), site_names(n_layers, layout), args.layers, args.sites, n_layers)


def check_backend(
    option: str, backend: str | None, model: ModelConfig, device: torch.device, own: Path | None
) -> None:
    """Refuse, naming `option` and the backends that do run, an attention backend the model has no
    kernel for or this device cannot run; `own` is the checkpoint when the backend defaults to the
    path it was trained with (`--backend` not given)."""
    from contracts.errors import BadInput
    from stack.model.checks import runnable_paths

    given = backend is not None
    backend = backend or model.attention
    if backend == "triton" and (model.diff_attn or model.mod):
        which = "diff_attn=true" if model.diff_attn else f"mod_every={model.mod_every}"
        raise BadInput(
            f"{option} triton: the Triton kernel has no path for a model with {which}; "
            f"use {option} sdpa or {option} naive"
        )
    if backend in runnable_paths(device, model.head_width):
        return
    why = (
        f"cannot run on {device.type} here (the Triton kernel needs a CUDA device or TRITON_INTERPRET=1 "
        f"set before triton is imported, and a head_dim it is built for; this model's is {model.head_width})"
    )
    if own is not None and not given:
        raise BadInput(
            f"{own} was trained with attention='{backend}', which {why}; trace it with --backend sdpa "
            "(the same numbers, GATE-MODEL-001) or --backend naive, or where Triton runs (--device cuda)"
        )
    raise BadInput(f"{option} {backend} {why}; use {option} sdpa or {option} naive, or --device cuda")


# The model settings that decide a block's sites (stack.trace.sites.layout_for): two checkpoints that
# differ in one cannot be compared site by site.
SITE_SETTINGS = ("moe_experts", "moe_shared_expert", "diff_attn", "mod_every")


def check_bisectable(a: ModelConfig, b: ModelConfig, against: Path) -> None:
    """Refuse, before either path runs, a --against checkpoint whose blocks are not A's: another
    depth, or another option (experts, differential attention, depth routing) and so other sites."""
    from contracts.errors import BadInput
    from stack.trace.sites import layout_for

    ways = (
        "bisect against a checkpoint of the same depth and options (e.g. another step of the same run), "
        "or trace each alone with `stack trace CKPT --prompt TEXT`"
    )
    if a.n_layers != b.n_layers:
        raise BadInput(
            f"--against {against} has {b.n_layers} blocks and path A {a.n_layers}: bisection compares "
            f"each site with the same site of the other path; {ways}"
        )
    if layout_for(a) != layout_for(b):
        differ = ", ".join(
            f"{key} {getattr(a, key)} vs {getattr(b, key)}"
            for key in SITE_SETTINGS
            if getattr(a, key) != getattr(b, key)
        )
        raise BadInput(
            f"--against {against} has other blocks than path A ({differ}), so other trace sites: "
            f"bisection compares each site with the same site of the other path; {ways}"
        )


def _one_token(tokenizer: Tokenizer, text: str, option: str) -> int:
    """The id of `text`, which must be exactly one token of the checkpoint's tokenizer."""
    from contracts.errors import BadInput

    ids = tokenizer.encode_prompt(text)
    if len(ids) != 1:
        raise BadInput(f"{option} {text!r} is {len(ids)} tokens for this tokenizer; give exactly one token")
    return ids[0]


def _patching(
    args: argparse.Namespace, a: Trained, model: GPT, idx: torch.Tensor, config: dict[str, Any]
) -> Result:
    """Patch from the clean prompt into the corrupted one: one site and position, or a sweep."""
    import torch

    from contracts.errors import BadInput
    from stack.trace.patch import Metric, check_asked, patch_runs, sweep_sites
    from stack.trace.patch_report import patch_result
    from stack.trace.sites import layout_for

    corrupted = a.tokenizer.encode_prompt(args.patch)
    length = idx.shape[1]
    metric = Metric(
        _one_token(a.tokenizer, args.target, "--target"),
        None if args.foil is None else _one_token(a.tokenizer, args.foil, "--foil"),
    )
    if args.patch_sweep is not None:
        layout = layout_for(model.config)
        sites, positions = sweep_sites(args.patch_sweep, len(model.layers), layout), None
    else:
        position = length - 1 if args.patch_position is None else args.patch_position
        if position >= length:
            raise BadInput(
                f"--patch-position {position} is past the prompt's {length} tokens (0-{length - 1})"
            )
        sites, positions = [args.patch_site], [position]
    config.update(
        patch=args.patch,
        target=metric.target,
        foil=metric.foil,
        patch_sites=sites,
        patch_positions="every" if positions is None else positions,
    )
    bad = torch.tensor([corrupted], dtype=torch.long, device=idx.device)
    run = patch_runs(model, idx, bad, metric, sites, positions)
    # GATE-PATCH-002 (check asked): the grid against the options as the command line gives them
    asked = {"site": args.patch_site, "position": args.patch_position, "sweep": args.patch_sweep}
    check_asked(asked, length, run)
    return patch_result(run, metric, idx[0].tolist(), a.tokenizer.text_of)


def _from_dumps(args: argparse.Namespace, config: dict[str, Any]) -> Result:
    from stack.trace import modes
    from stack.trace.bisect import check_comparable
    from stack.trace.compare import check_tolerances, parse_rules
    from stack.trace.dump import read_dump

    a, b = (read_dump(p) for p in args.compare)
    check_comparable(a.trace, b.trace)
    config.update(dumps=[str(p) for p in args.compare], atol=args.atol, rtol=args.rtol)
    names = _names(args, a.trace.n_layers, a.trace.layout)
    rules = parse_rules(args.atol, args.rtol)
    labels = (str(args.compare[0]), str(args.compare[1]))
    result = modes.dumps(a, b, names, rules, args.stop_on_nonfinite, labels)
    check_tolerances(args.atol, args.rtol, result.payload())  # GATE-TRACE-003, check tolerance
    _check_selection(args, result, a.trace.n_layers, a.trace.layout)
    return result


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that exists and that --force may not replace."""
    from stack.outputs import ledger
    from stack.trace.record import check_out_dir, check_output_file

    for option, path in (("--json", args.json), ("--csv", args.csv), ("--dump", args.dump)):
        check_output_file(path, option, args.force)
    if args.out is not None:
        check_out_dir(args.out, args.force, "patch" if args.patch is not None else "trace")
    ledger.check(args.evidence_dir)


def write_outputs(args: argparse.Namespace, result: Result) -> dict[str, str]:
    """Write --json and --csv, if asked for (shared with `stack lens`); the sha256 of each file's
    bytes as written, by its option."""
    import csv
    import hashlib
    import io
    import json

    from contracts.evidence import atomic_write_bytes, plain

    texts: dict[str, tuple[Path, str]] = {}
    if args.json is not None:
        texts["--json"] = args.json, json.dumps(plain(result.payload()), indent=1, allow_nan=False) + "\n"
    if args.csv is not None:
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(result.csv[0]) if result.csv else [])
        writer.writeheader()
        writer.writerows(result.csv)
        texts["--csv"] = args.csv, table.getvalue()
    written = {}
    for option, (path, text) in texts.items():
        data = text.encode()
        atomic_write_bytes(path, data)
        written[option] = hashlib.sha256(data).hexdigest()
    return written


def run_recorded(
    args: argparse.Namespace,
    anchor: Path,
    kind: str,
    config: dict[str, Any],
    compute: Callable[[Ledger], Result],
    data: DataRef | None = None,
    written_check: Callable[[Result, dict[str, str]], None] | None = None,
) -> tuple[Result, Path]:
    """Run `compute` under a ledger, write the outputs asked for and the evidence record of `kind`
    (citing `data`, the prepared data it read, if any), and print the result's lines (shared with
    `stack lens`). `written_check` sees the result and the sha256 of each output written, under the
    same ledger. A gate that fires still leaves its record, naming the gate, before the violation
    goes on to the CLI's exit 3."""
    from contracts.errors import GateViolation
    from contracts.gates import contract_mode
    from contracts.ledger import Ledger, recording
    from stack.trace.record import check_record_home, record_dir, write_record

    check_record_home(args.out, args.evidence_dir, anchor)
    ledger = Ledger()
    mode = contract_mode().value

    def recorded(payload: dict[str, Any] | None, stop_reason: str | None) -> Path:
        """The record of this run, with the report `payload` (None: the gate stopped it first)."""
        directory, rid = record_dir(args.out, args.evidence_dir, anchor, kind)
        return write_record(
            directory,
            rid,
            args.argv,
            args.device,
            mode,
            config,
            payload,
            ledger,
            stop_reason,
            kind,
            args.force,
            data,
        )

    with recording(ledger):
        try:
            result = compute(ledger)
            written = write_outputs(args, result)
            if written_check is not None:
                written_check(result, written)
        except GateViolation as exc:
            recorded(None, str(exc))
            raise
    path = recorded(result.payload(), None)
    print("\n".join(result.lines))
    return result, path


def _checked(args: argparse.Namespace, checkpoint: Path | None, config: dict[str, Any]) -> Result:
    """The mode the options ask for, every traced forward of it exhaustively checked under --verify."""
    from contextlib import nullcontext

    from stack.trace.tracer import exhaustive_checks

    with exhaustive_checks() if args.verify else nullcontext():
        return _from_checkpoint(args, checkpoint, config) if checkpoint else _from_dumps(args, config)


def run(args: argparse.Namespace) -> int:
    """Trace, report, write the outputs asked for and the evidence record; 3 when something was found."""
    from contracts.errors import EXIT_GATE
    from stack.cli.inputs import check_inputs
    from stack.trace.record import TRACE_KIND, run_dir_of
    from stack.train.trained import resolve_checkpoint

    _validate(args)
    check_inputs("trace", args)
    _check_outputs(args)
    checkpoint = None if args.compare else resolve_checkpoint(args.path)
    anchor = run_dir_of(checkpoint) if checkpoint is not None else args.compare[0].resolve().parent
    config: dict[str, Any] = {
        "layers": args.layers,
        "sites": args.sites,
        "stop_on_nonfinite": args.stop_on_nonfinite,
    }
    kind = "patch" if args.patch is not None else TRACE_KIND
    result, path = run_recorded(
        args,
        anchor,
        kind,
        config,
        lambda _ledger: _checked(args, checkpoint, config),
    )
    where = f" at {result.first}" if result.first else ""
    print(f"verdict: {result.verdict}{where}   evidence: {path}")
    return EXIT_GATE if result.found else 0
