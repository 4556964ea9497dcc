"""One model's whole life through the real commands, at smoke size: the journey tests' shared walk.

    prepare → train → prepare chat (the model's tokenizer) → sft → prepare prefs → dpo → LoRA
    → merge → export hf → import-hf → eval

Each step is the CLI's entry point, in-process, with 2 steps of training where it trains; the
walk stops at the first step that does not exit 0 and says which. `Journey` keeps every step's
directory, so the tests can ask the integrity checker about every record, follow the lineage from
the last model back to the first, and compare the tokenizer each directory carries.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, EvidenceRecord, RunStatus, read_evidence
from stack.cli import main
from stack.data.manifest import load_manifest
from stack.export.hf_tokenizer import model_tokenizer
from tests.support.paths import DATA
from tests.support.prefs_support import write_pairs
from tests.support.train_support import unjudged, write_corpus
from tools.integrity.check import run_checks
from tools.integrity.lineage import families, vouched_weights

TOKENIZER_GATE = "GATE-DATA-007"
QUICK = ["train.device='cpu'", "train.batch_size=1", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
STEPS = ["train.steps=2"]
LORA = ["lora.r=4", "lora.alpha=8", "lora.targets='q,v'"]
# The steps that make a model, in order: each one's model is made from the one before it.
MODELS = ["train", "sft", "dpo", "lora", "merge", "export", "import"]
SOURCE = "import source"  # the Hugging Face journey's first model: the one it brings
DATA_STEPS = ["prepare", "prepare chat", "prepare prefs"]
ORDER = ["prepare", "train", "prepare chat", "sft", "prepare prefs", *MODELS[2:], "eval"]


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


@dataclass
class Journey:
    """Where each step wrote, how it exited, and how long it took."""

    root: Path
    dirs: dict[str, Path] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def broke_at(self) -> str | None:
        """The first step that did not exit 0, or None when every step did."""
        return next((name for name, code in self.codes.items() if code != 0), None)

    def record_dirs(self) -> list[Path]:
        """Every step's directory that holds an evidence record (the data steps keep none here)."""
        return [path for name, path in self.dirs.items() if name not in DATA_STEPS]

    def identities(self) -> dict[str, str]:
        """step → the identity of the tokenizer its directory carries (a DATA_DIR's from its manifest)."""
        found = {}
        for name, path in self.dirs.items():
            if name in DATA_STEPS:
                identity = load_manifest(path).tokenizer.identity
                assert identity is not None, name
                found[name] = identity
            elif name != "eval":
                found[name] = model_tokenizer(path).identity
        return found


def walk(root: Path, tokenizer: str, source: Path | None = None, pack_len: int = 96) -> Journey:
    """The whole journey under `root` with `tokenizer` for the first prepare (byte, bpe) or, from a
    Hugging Face `source` directory, that model imported first, its own tokenizer, and a fine-tune
    of it as the training step."""
    journey = Journey(root)
    text, chat, pairs = root / "text", root / "chat", root / "pairs"
    start = None if source is None else root / "source"
    first = ["--tokenizer", tokenizer] if start is None else ["--tokenizer", str(start)]
    vocab = ["--vocab-size", "300"] if tokenizer == "bpe" else []
    base, sft, dpo, lora = root / "base", root / "sft", root / "dpo", root / "lora"
    merged, export, imported, scored = root / "merged", root / "export", root / "imported", root / "eval"
    train = ["train", "--data", str(text), *_sets(*QUICK, *STEPS)]
    train += ["--preset", "smoke", *_sets("model.ctx=128")] if start is None else ["--init-from", str(start)]
    prepare_chat = [
        "prepare",
        str(DATA / "chat_small.jsonl"),
        "--format",
        "chat",
        "--pack-len",
        str(pack_len),
    ]
    prepare_prefs = [
        "prepare",
        str(write_pairs(root / "pairs.jsonl")),
        "--format",
        "prefs",
        "--pack-len",
        "48",
    ]
    halves = ["--val-fraction", "0.5"]
    dpo_args = ["dpo", str(sft), "--data", str(pairs), "--steps", "2", "--batch-size", "1", "--device", "cpu"]
    eval_args = ["eval", str(imported), "--split", "val", "--data", str(text), "--record", str(scored)]
    steps: list[tuple[str, Path, list[str]]] = []
    if source is not None and start is not None:
        steps.append((SOURCE, start, ["import-hf", str(source)]))
    steps += [
        ("prepare", text, ["prepare", str(write_corpus(root)), "--val-fraction", "0.25", *first, *vocab]),
        ("train", base, train),
        ("prepare chat", chat, [*prepare_chat, *halves, "--tokenizer", str(base)]),
        ("sft", sft, ["sft", "--data", str(chat), "--init-from", str(base), *_sets(*QUICK, *STEPS)]),
        ("prepare prefs", pairs, [*prepare_prefs, *halves, "--tokenizer", str(sft)]),
        ("dpo", dpo, dpo_args),
        ("lora", lora, ["sft", "--data", str(chat), "--init-from", str(dpo), *_sets(*QUICK, *STEPS, *LORA)]),
        ("merge", merged, ["lora", "merge", str(lora)]),
        ("export", export, ["export", str(merged), "--format", "hf"]),
        ("import", imported, ["import-hf", str(export)]),
        ("eval", scored, eval_args),
    ]
    for name, out, argv in steps:
        started = time.perf_counter()
        journey.dirs[name] = out
        journey.codes[name] = main(argv if name == "eval" else [*argv, "--out", str(out)])
        journey.seconds[name] = time.perf_counter() - started
        if journey.codes[name] != 0:
            break
    return journey


def records(journey: Journey) -> dict[str, EvidenceRecord]:
    """step → its evidence record, for every step that keeps one."""
    return {
        name: read_evidence(path / EVIDENCE_FILE)
        for name, path in journey.dirs.items()
        if name not in DATA_STEPS
    }


def assert_every_step_ran(journey: Journey) -> None:
    """A journey that stops at any step is red, naming the step."""
    broke = journey.broke_at
    assert broke is None, f"the journey broke at `{broke}` (exit {journey.codes[broke]})"
    assert [n for n in journey.codes if n != SOURCE] == ORDER


def assert_every_record_holds(journey: Journey) -> None:
    """The integrity checker finds nothing wrong with any step's record (lineage included), and
    every record is completed with every gate of its run kind held."""
    report = run_checks(REPO_ROOT, journey.record_dirs(), runs_only=True)
    assert [f.line() for f in report.violations] == []
    for name, record in records(journey).items():
        assert record.run.status is RunStatus.COMPLETED, name
        assert unjudged(journey.dirs[name], record.run.kind) == {}, name


def assert_lineage_is_complete(journey: Journey) -> None:
    """Each model names the one before it, by record id and by the weights that record vouches for,
    and the ledger's family tree is the journey, from the first model to the last."""
    found = records(journey)
    chain = ([SOURCE] if SOURCE in found else []) + MODELS
    for parent, child in itertools.pairwise(chain):
        lineage = found[child].lineage
        assert lineage is not None and lineage.parents, child
        first = lineage.parents[0]
        assert first.run == found[parent].run.id, child
        assert first.checkpoint_sha256 == vouched_weights(found[parent]), child
    by_id = {record.run.id: record for record in found.values()}
    roots = families(by_id)
    assert [r.run_id for r in roots] == [found[chain[0]].run.id]
    path, node = [roots[0].run_id], roots[0]
    while node.children:
        node = node.children[0][1]
        path.append(node.run_id)
    assert path == [found[name].run.id for name in chain]
    scored = found["eval"].checkpoint
    assert scored is not None and scored.files["model.safetensors"].sha256 == vouched_weights(found["import"])


def assert_one_tokenizer(journey: Journey) -> None:
    """Every directory of the journey carries one tokenizer; GATE-DATA-007 held wherever it was judged."""
    identities = journey.identities()
    assert len(set(identities.values())) == 1, identities
    judged = {name: verdict_of(journey.dirs[name], TOKENIZER_GATE) for name in records(journey)}
    assert {name: v for name, v in judged.items() if v is not None and v != "PASS"} == {}
    assert {name for name, v in judged.items() if v == "PASS"} >= {"sft", "dpo", "lora"}


def verdict_of(run_dir: Path, gate: str) -> str | None:
    """The verdict a run's record holds for `gate`, or None when its kind does not judge it."""
    return next((g.verdict.value for g in read_evidence(run_dir / EVIDENCE_FILE).gates if g.id == gate), None)


class JourneyChecks:
    """The checks every journey passes; a test module subclasses this as `Test...Journey` beside a
    module-scoped `journey` fixture, so each journey runs once and is checked four ways."""

    def test_every_step_runs(self, journey: Journey) -> None:
        assert_every_step_ran(journey)

    def test_every_record_holds(self, journey: Journey) -> None:
        assert_every_record_holds(journey)

    def test_the_lineage_runs_from_the_first_model_to_the_last(self, journey: Journey) -> None:
        assert_lineage_is_complete(journey)

    def test_one_tokenizer_all_the_way(self, journey: Journey) -> None:
        assert_one_tokenizer(journey)
