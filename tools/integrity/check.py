"""Cross-check the spec, the registry, the evidence and the code against each other.

    python tools/check_integrity.py [--root DIR] [--run RUN_DIR ...] [--runs-only] [--json]
    python tools/check_integrity.py --replay RUN --data DATA_DIR [--steps K] [--init-from CKPT]

Exit 0 when clean, 3 when any violation is found (each names its file and record: GATE-INTEG-001 or
GATE-INTEG-002 fired), 2 on bad usage, 1 when the checker itself failed (an internal error, never a
verdict: its traceback is saved and named). Every file is read as hostile (contracts/reading.py): a
file that is not what its name says, too large, or a link out of its directory is a violation of the
record that cites it, and the check goes on to the rest. It checks truth, not only form: every
verdict of every record is re-judged from the record's measured values by the gate's own judge, and
every field the record's cited artifacts decide is derived again and compared
(tools/integrity/record_checks.py, contracts/derive/); a completed run must have judged every gate, and every
check, its run kind requires (spec/run_kinds.yaml, a policy under revision like every threshold); a
release must rest on a record cited by content that passes every gate, made at the registry's commit
from a clean tree, accept by name each blocking gate its run waived, and carry the model card its
record gives; the registry keeps every entry it ever committed. `--replay` runs a training record's
first steps again (tools/integrity/replay.py). Warnings (stale verdicts made under an older revision or
schema, PROPOSED gates not yet covered) are reported but do not fail the check, unless a release
rests on them. A derived model's record must name its parents, and each parent's record must be
among those checked and vouch for the weights named (tools/integrity/lineage.py). GATE-INTEG-001 and
GATE-INTEG-002 are the rules it enforces.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import stat
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from contracts.checkpoints import WEIGHTS_FILES, released_manifest
from contracts.derive.benchmarks import computed_lines
from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK, BadInput
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, EvidenceRecord, runs_named, sha256_file
from contracts.model_card import model_card
from contracts.proof_lock import LOCK_FILE
from contracts.reading import (
    Unreadable,
    decoded,
    load_yaml,
    read_as_named,
    read_bytes,
    read_json,
    read_jsonl,
    read_text,
)
from contracts.registry import REGISTRY_FILE, Registry, RegistryArtifact, ReleasedModel, read_registry
from contracts.release_rules import INTEG_EVIDENCE, WEIGHTS_FILE, breaks, release_problems
from contracts.retirement import RETIRED_FILE, Retirements, read_retirements
from contracts.signing import ATTESTATION_FILE, model_problems, signature_problems, trusting, unsigned_problem
from contracts.spec import (
    RELEASE_KIND,
    SPEC_TOP_FILES,
    GateKind,
    Spec,
    load_spec,
    load_spec_from,
)
from tools.integrity.audit import (
    RUNS_DIR,
    CoverageRow,
    LoadedEvidence,
    Location,
    active,
    coverage,
    evidence_paths,
    load_evidence,
    prose_files,
    scan_bindings,
    scan_citations,
    scan_falsifiers,
)
from tools.integrity.lineage import (
    Release,
    evaluated_problems,
    lineage_problems,
    logged_shares,
    prepared_data_problems,
    rebadged_releases,
    release_parent_problems,
    same_run,
)
from tools.integrity.models.cross_reads import cross_read_problems
from tools.integrity.models.scored_text import committed_text, scored_texts, text_problems
from tools.integrity.one_run import Lines, canonical, copy_problems, twin_problems
from tools.integrity.place_links import Places, place_link_problems, record_places
from tools.integrity.proofs.mutation import lock_findings
from tools.integrity.prose_figures import figure_problems
from tools.integrity.record_checks import check_record_truth, newer
from tools.integrity.repeat_runs import repeat_problems, repeated_legs
from tools.integrity.retirement import blob_bytes, covered, retired_blob, retirement_problems
from tools.integrity.settings.bench_argv import line_problems, line_sources, script_of
from tools.integrity.settings.code_constants import constant_problems, constant_sources
from tools.integrity.settings.default_sources import default_problems, default_sources
from tools.integrity.settings.preset_sources import (
    OPTIONS_SOURCES,
    PRESET_SOURCES,
    PRESETS_FILE,
    SPEED_FILE,
    SPEED_SOURCES,
    options_problems,
    preset_problems,
    speed_problems,
    states_options,
    states_preset,
    states_speed_model,
)
from tools.integrity.spec_history import SpecHistory, commit_reader, committed_yaml, files_at, tree_names

INTEG_COVERAGE = "GATE-INTEG-002"
# What a finding of the checker's own failure is named by: no gate's, for it is no verdict.
CHECKER_FAILED = "CHECKER-FAILED"
# The exit status of an internal error: the checker failed, and its report is no verdict.
EXIT_INTERNAL = 1
# The gates whose judge decides over the count of their findings (each one's "check").
COUNTED = (INTEG_EVIDENCE, INTEG_COVERAGE)
STALE = "STALE"
UNSIGNED = "UNSIGNED"  # a record with no signature where spec/signing.yaml does not require one
SHARED_ID = "SHARED-ID"  # a --run record whose run id another, different one checked with it holds
# A ledger path cited in prose: evidence/runs/<run id>[/file].
CITED_EVIDENCE_RE = re.compile(r"evidence/runs/([A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])(/[\w./-]+)?")
# The version line of spec/spec.yaml.
SPEC_VERSION_RE = re.compile(r"^version:\s*['\"]?([0-9A-Za-z.+-]+)", re.MULTILINE)
# A run's metrics log, as its record lists it among its artifacts.
METRICS_LOG = "metrics.jsonl"
# The manifest of the DATA_DIR a prepare record made, filed beside it; a checkpoint's (and a
# release's) has the same name.
PREPARED_MANIFEST = CHECKPOINT_MANIFEST = "manifest.json"
# A checkpoint's step, config and tokenizer, released beside the weights.
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, where (file and record id), and what."""

    rule: str
    file: str
    record: str
    message: str

    def line(self) -> str:
        record = f" [{self.record}]" if self.record else ""
        return f"{self.rule}  {self.file}{record}: {self.message}"


@dataclass
class Report:
    violations: list[Finding]
    warnings: list[Finding]
    rows: list[CoverageRow]
    records: int
    failures: list[Finding] = field(default_factory=list)  # where the checker itself failed
    runs: tuple[str, ...] = ()  # the --run directories, as the findings name them

    def exit_code(self) -> int:
        """1 where the checker failed anywhere (what it did check is no full verdict), else 3 when
        a gate fired, else 0."""
        if self.failures:
            return EXIT_INTERNAL
        return EXIT_GATE if self.violations else EXIT_OK

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.violations and not self.failures,
            "records": self.records,
            "violations": [asdict(f) for f in self.violations],
            "failures": [asdict(f) for f in self.failures],
            "warnings": [asdict(f) for f in self.warnings],
            "coverage": [
                {
                    "gate": row.gate.id,
                    "status": row.gate.status.value,
                    "kind": row.gate.kind.value,
                    "bindings": [str(loc) for loc in row.bindings],
                    "falsifiers": [str(loc) for loc in row.falsifiers],
                    "latest": row.verdicts[0].label if row.verdicts else None,
                }
                for row in self.rows
            ],
        }


# Full commit sha → its committer date, as git showed it (Checker._commit_dates).
_COMMIT_DATES: dict[str, datetime] = {}


class Checker:
    """Collects findings while walking one repository."""

    def __init__(self, root: Path, spec: Spec, trust: Sequence[Path] = ()) -> None:
        self.root = root.resolve()
        self.spec = spec
        self.signing = trusting(spec.signing, trust)
        self.violations: list[Finding] = []
        self.warnings: list[Finding] = []
        self.failures: list[Finding] = []
        self._found: set[Finding] = set()  # the violations, to name each once
        self.unreadable: set[str] = set()  # run ids of records a cited file of which does not read
        self.owners: dict[str, str] = {}  # a record's directory (resolved) → its run id
        self._sha_cache: dict[str, str] = {}
        self.stale: dict[str, dict[str, str]] = {}  # run id → gate id → why it is stale
        self.history = SpecHistory(self.root)  # older policy files, for records that cite them
        self.retired = Retirements()  # what has left the working tree, and the blobs that pin it

    def fail(self, rule: str, file: Path | str, record: str, message: str) -> None:
        finding = Finding(rule, self.named(file), record, message)
        if finding not in self._found:  # a file two checks read is named once
            self._found.add(finding)
            self.violations.append(finding)

    @contextmanager
    def guarded(self, file: Path | str, record: str, step: str = "") -> Iterator[None]:
        """Run one record's checks (`record`), or one `step` of the check over many, so that nothing
        it meets ends the check: a file that does not read (`Unreadable`) is a GATE-INTEG-001
        violation of the record that cites it (`record`, else the record whose directory holds the
        file), and any other exception is the checker's own failure, its traceback saved and named,
        a finding that is no verdict (CHECKER_FAILED)."""
        try:
            yield
        except Unreadable as exc:
            self.fail(INTEG_EVIDENCE, exc.path, record or self.owner(exc.path), exc.problem)
        except Exception as exc:
            where = f"its {step} check" if step else "this record"
            saved = saved_traceback()
            message = f"the checker failed on {where} ({type(exc).__name__}): traceback saved to {saved}"
            self.failures.append(Finding(CHECKER_FAILED, self.named(file), record, message))

    def owner(self, path: Path) -> str:
        """The run id of the record whose directory holds `path` ("" where none does)."""
        for directory in (path, *path.parents):
            with contextlib.suppress(OSError, ValueError):
                if (found := self.owners.get(str(directory.resolve()))) is not None:
                    return found
        return ""

    def verdict(self) -> list[Finding]:
        """The violations that stand once each gate's judge has decided over them (`standing`)."""
        return standing(self.violations, self.spec)

    def warn(self, rule: str, file: Path | str, record: str, message: str) -> None:
        self.warnings.append(Finding(rule, self.named(file), record, message))

    def named(self, file: Path | str) -> str:
        """`file` relative to the repository, as a finding names it (escaped where it holds a NUL)."""
        path = Path(file)
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except (ValueError, OSError):
            return str(path) if "\0" not in str(path) else ascii(str(path))

    def _sha256(self, path: str) -> str:
        if path not in self._sha_cache:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            self._sha_cache[path] = digest.hexdigest()
        return self._sha_cache[path]

    def check_file_ref(
        self, file: Path, record: str, base: Path, within: Path, rel: str, sha256: str, size: int
    ) -> bool:
        """A cited path: relative, inside `within`, present, with the right size and checksum.
        Whether it is a file there, to be read."""
        if Path(rel).is_absolute() or rel.startswith("~"):
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} is absolute; cite it relative")
            return False
        if "\0" in rel:
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} holds a NUL byte")
            return False
        # os.path and one stat, not pathlib: this runs for every artifact of every record, and
        # pathlib's overhead alone was a tenth of a check over ten thousand records.
        target = os.path.realpath(os.path.join(base, rel))
        if not os.path.join(target, "").startswith(os.path.join(within, "")):
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} leaves {self.named(within) or '.'}")
            return False
        try:
            found = os.stat(target)
        except OSError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            self.fail(INTEG_EVIDENCE, file, record, f"path {rel!r} does not exist")
            return False
        if found.st_size != size:
            self.fail(INTEG_EVIDENCE, file, record, f"{rel}: {found.st_size} bytes, cited {size}")
        elif self._sha256(target) != sha256:
            self.fail(INTEG_EVIDENCE, file, record, f"{rel}: sha256 does not match the cited one")
        return True

    def check_record(self, loaded: LoadedEvidence, within: Path, in_ledger: bool) -> None:
        """Schema, run id, cited gates (and their revisions) and artifacts of one record, whatever
        they hold (`guarded`)."""
        if loaded.record is None:
            self.fail(INTEG_EVIDENCE, loaded.path, "", f"does not validate: {loaded.error}")
            return
        run_id = loaded.record.run.id
        self.owners[str(loaded.path.parent.resolve())] = run_id
        with self.guarded(loaded.path, run_id):
            self._check_record(loaded, within, in_ledger)

    def cited_unreadable(self, loaded: LoadedEvidence, within: Path) -> bool:
        """Every file the record cites, resolved, sized and hashed (`check_file_ref`), and read as the
        format its name says; whether one of them does not read (each such file a violation): the
        record's truth is not derived from files that do not read."""
        assert loaded.record is not None
        run_id, found = loaded.record.run.id, False
        for art in loaded.record.artifacts:
            if not self.check_file_ref(
                loaded.path, run_id, loaded.path.parent, within, art.path, art.sha256, art.bytes
            ):
                continue
            try:
                read_as_named(loaded.path.parent / art.path, within)
            except Unreadable as exc:
                self.fail(INTEG_EVIDENCE, exc.path, run_id, exc.problem)
                found = True
        if found:
            self.unreadable.add(run_id)
        return found

    def _check_record(self, loaded: LoadedEvidence, within: Path, in_ledger: bool) -> None:
        record = loaded.record
        assert record is not None
        run_id = record.run.id
        if in_ledger and loaded.path.parent.name != run_id:
            self.fail(
                INTEG_EVIDENCE,
                loaded.path,
                run_id,
                f"run id differs from its directory {loaded.path.parent.name!r}",
            )
        self.check_signature(loaded)
        if self.cited_unreadable(loaded, within):
            return
        truth = check_record_truth(record, loaded.path.parent, self.spec, self.history, self.root)
        for problem in truth.violations:
            self.fail(INTEG_EVIDENCE, loaded.path, run_id, problem)
        for reason in sorted(set(truth.stale.values())):
            gates = sorted(g for g, why in truth.stale.items() if why == reason)
            self.warn(
                STALE, loaded.path, run_id, f"{len(gates)} verdict(s) stale ({reason}): {', '.join(gates)}"
            )
        for warning in truth.warnings:
            self.warn(STALE, loaded.path, run_id, warning)
        self.stale[run_id] = truth.stale

    def check_signature(self, loaded: LoadedEvidence) -> None:
        """The record's envelope (contracts.signing) verified against the keys trusted for its run
        kind, over the files there now; an unsigned record is a warning naming what it cannot prove,
        or a violation where spec/signing.yaml requires its kind signed."""
        record = loaded.record
        assert record is not None
        record_dir, run_id = loaded.path.parent, record.run.id
        envelope = record_dir / ATTESTATION_FILE
        if not envelope.exists():
            problem, required = unsigned_problem(self.signing, record.run.kind)
            if required:
                self.fail(INTEG_EVIDENCE, loaded.path, run_id, problem)
            else:
                self.warn(UNSIGNED, loaded.path, run_id, problem)
            return
        for problem in signature_problems(record_dir, record, self.signing):
            self.fail(INTEG_EVIDENCE, envelope, run_id, problem)

    def check_commits(self, records: list[LoadedEvidence]) -> None:
        """Every cited git sha is a commit of this repository's history."""
        cited: dict[str, list[LoadedEvidence]] = {}
        for loaded in records:
            if loaded.record is None:
                continue
            sha = loaded.record.code.git_sha
            if sha is None:
                self.fail(INTEG_EVIDENCE, loaded.path, loaded.record.run.id, "records no git commit")
            else:
                cited.setdefault(sha, []).append(loaded)
        known = self._known_commits(list(cited))
        for sha in sorted(set(cited) - known):
            for loaded in cited[sha]:
                assert loaded.record is not None
                self.fail(
                    INTEG_EVIDENCE,
                    loaded.path,
                    loaded.record.run.id,
                    f"git sha {sha[:12]} is not in this repository's history",
                )
        dates = self._commit_dates(sorted(known))
        for sha, when in dates.items():
            for loaded in cited[sha]:
                assert loaded.record is not None
                if loaded.record.run.started < when:
                    self.fail(
                        INTEG_EVIDENCE,
                        loaded.path,
                        loaded.record.run.id,
                        f"started {loaded.record.run.started.isoformat()}, before its commit {sha[:12]} "
                        f"was made ({when.isoformat()}): a run cannot come from code that did not exist yet",
                    )
        self.check_spec_at_commits({sha: cited[sha] for sha in known})
        self.check_sources_at_commits({sha: cited[sha] for sha in known})

    def _commit_dates(self, shas: list[str]) -> dict[str, datetime]:
        """sha → when the commit was made (its committer date), in one `git show` for those this
        process has not read before: a commit's date is part of what its full sha hashes, so it
        is the same in every repository that holds the commit."""
        unread = [sha for sha in shas if sha not in _COMMIT_DATES]
        if unread:
            proc = subprocess.run(
                ["git", "-C", str(self.root), "show", "-s", "--format=%H %cI", *unread],
                capture_output=True,
                text=True,
                check=False,
            )
            for line in proc.stdout.splitlines():
                sha, _, when = line.partition(" ")
                with contextlib.suppress(ValueError):
                    _COMMIT_DATES[sha] = datetime.fromisoformat(when)
        return {sha: _COMMIT_DATES[sha] for sha in shas if sha in _COMMIT_DATES}

    def check_spec_at_commits(self, cited: dict[str, list[LoadedEvidence]]) -> None:
        """A record names the spec of its commit: a clean one its version and its sha256 (the digest
        of spec/ at the commit, `contracts.spec.spec_files`), every one, dirty or clean, the goals
        of spec/benchmarks.yaml at the commit it states it was measured against (a benchmark's
        `goal`, a gpu-check's `goals[*].goal`).

        A resumed training record keeps the commit it started at while its spec is the resume's, so
        it is not held to its first commit's spec. A dirty tree may have edited spec/ itself, so its
        digest is not compared, nor its version unless its digest proves its spec the commit's (the
        same sha256: then it is that spec, of that version); a goal it states must still be the
        committed one.
        """
        shas = [sha for sha, records in cited.items() if records]
        files = self._files_at(shas, ("spec.yaml", "benchmarks.yaml"))
        digests = self._spec_digests(shas)
        for sha, records in cited.items():
            version, goals = version_in(files.get((sha, "spec.yaml"))), files.get((sha, "benchmarks.yaml"))
            by_name = (
                {b.get("name"): b for b in (goals or {}).get("benchmarks", []) if isinstance(b, dict)}
                if isinstance(goals, dict)
                else {}
            )
            for loaded in records:
                record = loaded.record
                if record is None:
                    continue
                for key, (stated, goal) in benchmark_goals(record, by_name).items():
                    if stated != goal:
                        self.fail(
                            INTEG_EVIDENCE,
                            loaded.path,
                            record.run.id,
                            f"metrics.{key} is {stated!r}, but spec/benchmarks.yaml at its commit {sha[:12]} "
                            f"says {goal!r}",
                        )
                if record.metrics.get("resumes"):
                    continue
                digest = digests.get(sha)
                proven = not record.code.git_dirty or record.spec.sha256 == digest
                if proven and version is not None and record.spec.version != version:
                    self.fail(
                        INTEG_EVIDENCE,
                        loaded.path,
                        record.run.id,
                        f"names spec {record.spec.version}, but its commit {sha[:12]} has spec {version}",
                    )
                if not record.code.git_dirty and digest is not None and record.spec.sha256 != digest:
                    self.fail(
                        INTEG_EVIDENCE,
                        loaded.path,
                        record.run.id,
                        f"spec.sha256 is {record.spec.sha256[:12]}, but the spec at its commit {sha[:12]} "
                        f"hashes to {digest[:12]}",
                    )

    def check_sources_at_commits(self, cited: dict[str, list[LoadedEvidence]]) -> None:
        """What a record states of a file of the repository, against the file at its commit
        (`sources_cited`): a text it scored, dirty or clean (tools/integrity/models/scored_text.py: a dirty
        record's where what it states proves the text the committed one, else a warning says it is not
        derived), the model and train settings of a preset it measured, as the preset and its
        sections' defaults decide them, and likewise an options benchmark's parameter counts and a
        speed benchmark's timed model (dirty or clean, as its goals: a preset it names is the
        committed one; tools/integrity/settings/preset_sources.py); the config values a command line left to
        its command's defaults, as the parser at the commit declares them (a dirty record's are warned
        of; tools/integrity/settings/default_sources.py)."""
        wanted = [
            (sha, path, loaded.path, loaded.record)
            for sha, records in cited.items()
            for loaded in records
            if loaded.record is not None
            for path in sources_cited(loaded.record)
        ]
        blobs = files_at(self.root, sorted({(sha, path) for sha, path, _, _ in wanted}))
        for sha, path, file, record in wanted:
            blob = blobs.get((sha, path))
            if path in (texts := scored_texts(record)):  # the scored text, by the path its commit holds
                if path != texts[0]:
                    continue
                path, blob = committed_text(texts, lambda tail, sha=sha: blobs.get((sha, tail)))
            if path == PRESETS_FILE:  # the preset with its sections' defaults, read together
                sources = OPTIONS_SOURCES if states_options(record) else PRESET_SOURCES
                found = {p: blobs.get((sha, p)) for p in sources}
                problems = options_problems(record, found) if states_options(record) else []
                problems += preset_problems(record, found) if states_preset(record) else []
                warnings: list[str] = []
            elif (script := script_of(record)) is not None and path == script.path:  # its command line
                problems, warnings = line_problems(
                    record, script, {p: blobs.get((sha, p)) for p in line_sources(record)}
                )
            elif path == SPEED_FILE and states_speed_model(record):  # the model a speed benchmark timed
                problems = speed_problems(record, {p: blobs.get((sha, p)) for p in SPEED_SOURCES})
                warnings = []
            elif path in OPTIONS_SOURCES:
                continue
            elif path in (sources := default_sources(record)):  # what a silent command line left
                if path != sources[0]:
                    continue
                found = default_problems(record, commit_reader(self.root, sha, blobs))
                problems, warnings = ([], found) if record.code.git_dirty else (found, [])
            elif path in (constants := constant_sources(record)):  # what committed constants decide
                if path != constants[0]:
                    continue
                found = constant_problems(record, {p: blobs.get((sha, p)) for p in constants})
                problems, warnings = ([], found) if record.code.git_dirty else (found, [])
            elif blob is None:  # a dirty tree may have scored a file it had not committed yet
                said = f"states what {path} holds, but its commit {sha[:12]} has no such file"
                if record.code.git_dirty:
                    self.warn(STALE, file, record.run.id, said)
                else:
                    self.fail(INTEG_EVIDENCE, file, record.run.id, said)
                continue
            else:
                problems, warnings = text_problems(record, path, blob, self.root)
            for problem in problems:
                self.fail(INTEG_EVIDENCE, file, record.run.id, f"{problem} at its commit {sha[:12]}")
            for warning in warnings:
                self.warn(STALE, file, record.run.id, warning)

    def _spec_digests(self, shas: list[str]) -> dict[str, str]:
        """The sha256 of spec/ at each commit, as `contracts.spec.load_spec_from` digests it: the
        files of `spec_files` the commit has (one made before a file existed hashes the rest), each
        as its path and bytes (two git calls in all)."""
        if not shas:
            return {}
        trees = files_at(self.root, [(sha, "spec/gates") for sha in shas], kind=b"tree")
        wanted: dict[str, list[str]] = {}
        for sha in shas:
            gates = sorted(
                f"gates/{name}"
                for name in tree_names(trees.get((sha, "spec/gates"), b""))
                if name.endswith(".yaml")
            )
            wanted[sha] = [*SPEC_TOP_FILES, *gates]
        blobs = files_at(
            self.root, [(sha, f"spec/{name}") for sha, names in wanted.items() for name in names]
        )
        digests = {}
        for sha, names in wanted.items():
            digest = hashlib.sha256()
            for name in names:
                blob = blobs.get((sha, f"spec/{name}"))
                if blob is not None:
                    digest.update(name.encode() + b"\0")
                    digest.update(blob + b"\0")
            digests[sha] = digest.hexdigest()
        return digests

    def _files_at(self, shas: list[str], names: tuple[str, ...]) -> dict[tuple[str, str], object]:
        """spec/<name> at each commit, parsed (absent where git has none), in one git call."""
        blobs = files_at(self.root, [(sha, f"spec/{name}") for sha in shas for name in names])
        found: dict[tuple[str, str], object] = {}
        for (sha, path), blob in blobs.items():
            name = path.removeprefix("spec/")
            with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError):
                # spec.yaml is read for its version line only: its changelog is long to parse
                found[(sha, name)] = blob.decode("utf-8") if name == "spec.yaml" else committed_yaml(blob)
        return found

    def _known_commits(self, shas: list[str]) -> set[str]:
        if not shas:
            return set()
        proc = subprocess.run(
            ["git", "-C", str(self.root), "cat-file", "--batch-check"],
            input="".join(f"{s}^{{commit}}\n" for s in shas).encode(),
            capture_output=True,
            check=False,
        )
        known = set()
        for line in proc.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "commit":
                known.add(parts[0])
        return known

    def check_registry(self, registry: Registry, records: dict[str, LoadedEvidence]) -> None:
        """Released models rest on true, complete, clean evidence cited by content."""
        path = self.root / REGISTRY_FILE
        versions = {e.version for e in self.spec.header.changelog}
        for model in registry.models:
            with self.guarded(path, model.key):
                self._check_released(model, records, versions)

    def _check_released(
        self, model: ReleasedModel, records: dict[str, LoadedEvidence], versions: set[str]
    ) -> None:
        """One entry of the registry (`check_registry`)."""
        path, name = self.root / REGISTRY_FILE, model.key
        if model.spec_version not in versions:
            self.fail(
                INTEG_EVIDENCE,
                path,
                name,
                f"spec_version {model.spec_version} is not in the spec's changelog",
            )
        if model.git_sha not in self._known_commits([model.git_sha]):
            self.fail(
                INTEG_EVIDENCE,
                path,
                name,
                f"git sha {model.git_sha[:12]} is not in this repository's history",
            )
        then = version_in(self._files_at([model.git_sha], ("spec.yaml",)).get((model.git_sha, "spec.yaml")))
        if then is not None and newer(then, model.spec_version):
            self.fail(
                INTEG_EVIDENCE,
                path,
                name,
                f"spec_version {model.spec_version} is older than the spec {then} of its commit "
                f"{model.git_sha[:12]}: a model is released under its commit's spec, or a later one",
            )
        for art in model.artifacts:
            if art.path is not None and self.retired_file(model, art.path):
                self.check_retired_file(path, model, art)
            elif art.path is not None:
                self.check_file_ref(path, name, self.root, self.root, art.path, art.sha256, art.bytes)
            else:
                self.check_kept_elsewhere(path, model, art)
        card: str | None = None
        try:
            if not self.retired_file(model, model.card):
                card = read_text(self.root / model.card, self.root)
        except Unreadable as exc:
            self.fail(
                INTEG_EVIDENCE,
                path,
                name,
                f"model card {model.card!r} does not resolve inside the repository, or does not read: "
                f"{exc.problem}",
            )
        for cited in model.evidence:
            loaded = records.get(cited.run)
            if loaded is None or loaded.record is None:
                self.fail(
                    INTEG_EVIDENCE,
                    path,
                    name,
                    f"cites evidence run {cited.run!r}, which is not under {RUNS_DIR}",
                )
                continue
            if hashlib.sha256(loaded.raw).hexdigest() != cited.sha256:
                self.fail(
                    INTEG_EVIDENCE,
                    path,
                    name,
                    f"evidence run {cited.run!r}: its metadata.json does not match the cited sha256",
                )
            if model.withdrawn is None:
                for problem in self._release_problems(model, loaded.record):
                    self.fail(INTEG_EVIDENCE, path, name, f"evidence run {cited.run!r}: {problem}")
                if card is not None:
                    self.check_card(model, loaded.record, self.root / model.card, card)
                self.check_released_files(model, loaded.record)
                self.check_release_signature(model)

    def retired_file(self, model: ReleasedModel, path: str) -> bool:
        """Whether `path` is a file of a withdrawn release that has been retired from the tree."""
        gone = not os.path.exists(self.root / path)
        return model.withdrawn is not None and gone and retired_blob(self.retired, path) is not None

    def check_retired_file(self, path: Path, model: ReleasedModel, art: RegistryArtifact) -> None:
        """A withdrawn release's file retired from the tree: the bytes git keeps for it are the ones
        the registry hashed."""
        blob = retired_blob(self.retired, str(art.path))
        content = blob_bytes(self.root, blob) if blob is not None else None
        if content is None or len(content) != art.bytes or hashlib.sha256(content).hexdigest() != art.sha256:
            self.fail(
                INTEG_EVIDENCE,
                path,
                model.key,
                f"{art.path} is retired, but the blob its retirement names is not the file the registry "
                "hashed",
            )

    def check_kept_elsewhere(self, path: Path, model: ReleasedModel, art: RegistryArtifact) -> None:
        """A released file kept at a URL: its bytes are not here to hash, so the check says so (its
        sha256 and size are held to the record's checkpoint by the release rules all the same), and
        a copy that lies in the release's directory (downloaded there, git ignores it) is hashed."""
        local = f"{model.directory}/{art.name}"
        if (self.root / local).is_file():
            self.check_file_ref(path, model.key, self.root, self.root, local, art.sha256, art.bytes)
            return
        self.warn(
            INTEG_EVIDENCE,
            path,
            model.key,
            f"keeps {art.name} at {art.url}, outside the repository: its sha256 and size are held to "
            f"the record, its bytes are hashed only where a copy lies in {model.directory}/",
        )

    def check_card(self, model: ReleasedModel, record: EvidenceRecord, card: Path, text: str) -> None:
        """The model card (`text`, read from `card`) is the one its record and registry entry give
        (contracts.model_card)."""
        if record.checkpoint is None:
            return  # the release rules already refuse a record that hashed no checkpoint
        expected = model_card(model, record, record.checkpoint, Path(model.card).parent.as_posix())
        if text != expected:
            have, want = text.splitlines(), expected.splitlines()
            line = next(
                (i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b),
                min(len(have), len(want)),
            )
            shown = want[line] if line < len(want) else "(end of card)"
            self.fail(
                INTEG_EVIDENCE,
                card,
                model.key,
                f"is not the card its record gives (line {line + 1} should read {shown!r}); write it with "
                "`stack release`, never by hand",
            )

    def check_released_files(self, model: ReleasedModel, record: EvidenceRecord) -> None:
        """The manifest.json beside the released weights is the one the record's checkpoint gives
        (contracts.checkpoints.released_manifest: `stack release` writes it so), and the record
        states what the state.json it released (its checkpoint's, `release_problems`) holds."""
        if model.artifact(WEIGHTS_FILE) is None or record.checkpoint is None:
            return
        manifest = self.root / model.directory / CHECKPOINT_MANIFEST
        if not manifest.is_file() or read_bytes(manifest, self.root) != released_manifest(record.checkpoint):
            self.fail(
                INTEG_EVIDENCE,
                manifest,
                model.key,
                f"is not the manifest of its record's checkpoint (step {record.checkpoint.step}, "
                f"{', '.join(WEIGHTS_FILES)} as hashed): write it with `stack release`, never by hand",
            )
        kept = model.artifact(STATE_FILE)
        state = self.root / kept.path if kept is not None and kept.path is not None else None
        if state is not None and state.is_file():
            for problem in released_state_problems(record, read_json(state, self.root)):
                self.fail(INTEG_EVIDENCE, self.root / REGISTRY_FILE, model.key, problem)

    def check_release_signature(self, model: ReleasedModel) -> None:
        """The model-signing bundle the release cites, as cited, verified by model-signing against the
        keys trusted for releases over the released directory's files; an unsigned release is a
        warning, or a violation where spec/signing.yaml requires releases signed."""
        registry, cited = self.root / REGISTRY_FILE, model.signature
        if cited is None or cited.path is None:
            problem, required = unsigned_problem(self.signing, RELEASE_KIND)
            if required:
                self.fail(INTEG_EVIDENCE, registry, model.key, problem)
            else:
                self.warn(UNSIGNED, registry, model.key, problem)
            return
        bundle = self.root / cited.path
        inside = bundle.resolve().is_relative_to(self.root / model.directory)
        if not inside or not bundle.is_file() or sha256_file(bundle) != cited.sha256:
            self.fail(
                INTEG_EVIDENCE, registry, model.key, f"{cited.path} is missing or not the bundle it cites"
            )
            return
        for problem in model_problems(self.root / model.directory, self.signing):
            self.fail(INTEG_EVIDENCE, bundle, model.key, problem)

    def check_registry_history(self, registry: Registry) -> None:
        """Entries are never deleted or rewritten: every committed version of the registry is a prefix
        of today's, but that a release may since have been withdrawn (with its hashes unchanged)."""
        path = self.root / REGISTRY_FILE
        rel = REGISTRY_FILE.as_posix()
        log = subprocess.run(
            ["git", "-C", str(self.root), "log", "--format=%H", "--", rel], capture_output=True, check=False
        )
        now = {model.key: model for model in registry.models}
        for sha in log.stdout.decode().split():
            shown = subprocess.run(
                ["git", "-C", str(self.root), "show", f"{sha}:{rel}"], capture_output=True, check=False
            )
            try:
                then = Registry.model_validate(load_yaml(shown.stdout.decode()) or {})
            except (yaml.YAMLError, ValueError, UnicodeDecodeError):
                continue  # a version that did not validate was never a release
            for old in then.models:
                current = now.get(old.key)
                if current is None:
                    self.fail(
                        INTEG_EVIDENCE,
                        path,
                        old.key,
                        f"was released in commit {sha[:12]} and is gone: "
                        "an entry is never deleted; withdraw it with a reason",
                    )
                    continue
                keep = {"withdrawn"} if old.withdrawn is None else set()
                if old.model_dump(exclude=keep) != current.model_dump(exclude=keep):
                    self.fail(
                        INTEG_EVIDENCE,
                        path,
                        old.key,
                        f"differs from the entry committed in {sha[:12]}: a release's weights, hashes and "
                        "evidence never change (only a withdrawal may be added)",
                    )

    def check_ledger_history(self, retirements: Retirements) -> None:
        """The ledger is append-only: a file once committed under evidence/runs/ is never changed, in
        a later commit or in the working tree, and leaves only by retirement (a removal that an entry
        of evidence/retired.yaml covers, with the blob id the file had). A record is evidence of what
        a run did when it was filed; an edit after the fact, however consistent with what it cites,
        is caught here by git itself (a correction is a new run)."""
        rel = RUNS_DIR.as_posix()
        git = ["git", "-C", str(self.root)]
        changed = subprocess.run(
            [
                *git,
                "log",
                "--diff-filter=MDT",
                "--no-renames",
                "--raw",
                "--no-abbrev",
                "--format=commit %H",
                "--",
                rel,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        sha = ""
        for line in changed.stdout.splitlines():
            if line.startswith("commit "):
                sha = line.removeprefix("commit ")
            elif line.startswith(":"):
                self._judge_change(line, retirements, f"in commit {sha[:12]} after it was committed")
        edited = subprocess.run(
            [*git, "diff", "HEAD", "--no-renames", "--raw", "--no-abbrev", "--diff-filter=MDT", "--", rel],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in edited.stdout.splitlines():
            if line.startswith(":"):
                self._judge_change(line, retirements, "in the working tree")

    def _judge_change(self, raw: str, retirements: Retirements, when: str) -> None:
        """One line of git's --raw output for a committed ledger file: a violation unless it is a
        removal that a retirement covers."""
        meta, _, path = raw.partition("\t")
        fields = meta.split()
        status, old = fields[-1][:1], fields[2]
        if status == "D" and covered(retirements, path, old):
            return
        what = "removed without a retirement entry" if status == "D" else "changed"
        self.fail(
            INTEG_EVIDENCE,
            self.root / path,
            "",
            f"was {what} {when}: the ledger is append-only (a correction is a new run; a record leaves "
            "only through tools/retire.py)",
        )

    def check_retirements(self, retirements: Retirements, registry: Registry | None) -> None:
        """Each retirement entry holds against git and cites nothing live (tools/integrity/retirement.py)."""
        for problem in retirement_problems(self.root, retirements, registry, prose_cited_runs(self.root)):
            self.fail(INTEG_EVIDENCE, self.root / RETIRED_FILE, problem.where, problem.message)

    def _release_problems(self, model: ReleasedModel, record: EvidenceRecord) -> list[str]:
        """Why `record` cannot back the release `model` (empty when it can): `stack release`'s rules."""
        released = [(a.name, a.sha256, a.bytes) for a in model.artifacts]
        stale = self.stale.get(record.run.id, {})
        accepted = {w.gate: w.reason for w in model.accepted_waivers}
        return release_problems(
            self.spec, record, stale, released, model.git_sha, accepted, model.spec_version
        )

    def check_lineage(
        self,
        records: list[LoadedEvidence],
        context: Sequence[LoadedEvidence] = (),
        known: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """Each derived model's parents are in the ledger and vouch for its weights, each run is held
        to what the records of its data and of the model it started from or scored say
        (tools/integrity/lineage.py). `context` (a runs-only check: the committed ledger) holds the records
        the checked ones are joined to without being judged themselves: what is reported is what the
        checked records add to the context's own findings (`known`: a run whose data a committed
        prepare made, a lens reading of the file a checked lens-train saved), never a silent skip of
        a record the run names."""
        checked = {e.record.run.id for e in records if e.record is not None}
        joined = [e for e in context if e.record is not None and e.record.run.id not in checked]
        loaded = {e.record.run.id: e for e in [*joined, *records] if e.record is not None}
        for run_id, problem in lineage_found([*joined, *records], self.root):
            if (run_id, problem) not in known:
                self.fail(INTEG_EVIDENCE, loaded[run_id].path, run_id, problem)

    def check_releases_named(
        self, registry: Registry, records: dict[str, LoadedEvidence], checked: list[LoadedEvidence]
    ) -> None:
        """The records `checked` against the registry: one naming a released model by its directory
        names its weights and its checkpoint's step (tools/integrity/lineage.py); and, when the whole ledger
        is checked (`records`, the ledger by run id), one model's weights back one live release. A
        release's step is its evidence record's checkpoint's, read from the ledger."""
        releases = []
        for model in registry.models:
            weights = model.artifact(WEIGHTS_FILE)
            if weights is None:
                continue
            cited = [records.get(e.run) or self._ledger_record(e.run) for e in model.evidence]
            steps = [e.record.checkpoint.step for e in cited if e and e.record and e.record.checkpoint]
            step, live = (steps[0] if steps else None), model.withdrawn is None
            releases.append(Release(model.key, model.directory, weights.sha256, step, live))
        if records:
            for key, problem in rebadged_releases(releases):
                self.fail(INTEG_EVIDENCE, self.root / REGISTRY_FILE, key, problem)
        loaded = {e.record.run.id: e for e in checked if e.record is not None}
        by_id = {run_id: e.record for run_id, e in loaded.items() if e.record is not None}
        for run_id, problem in release_parent_problems(by_id, releases):
            self.fail(INTEG_EVIDENCE, loaded[run_id].path, run_id, problem)

    def _ledger_record(self, run_id: str) -> LoadedEvidence | None:
        """One record of this repository's ledger, read on its own (None when there is none)."""
        path = self.root / RUNS_DIR / run_id / EVIDENCE_FILE
        return load_evidence(path) if path.is_file() else None

    def check_ledger_dirs(self) -> None:
        """Every directory of the ledger holds a metadata.json; a record never just disappears."""
        runs = self.root / RUNS_DIR
        if not runs.is_dir():
            return
        for entry in sorted(runs.iterdir()):
            if entry.is_dir() and not (entry / EVIDENCE_FILE).is_file():
                self.fail(INTEG_EVIDENCE, entry, entry.name, f"ledger directory without {EVIDENCE_FILE}")

    def check_duplicates(self, records: list[LoadedEvidence]) -> None:
        """No record is a copy of another under a new id (a fabricated citation).

        A copy shows by the start time, commit and kind it shares with its original, or, when the
        start time was moved too, by its metrics log: every real run that took a step logs its own
        wall-clock throughput there, so two runs never write the same bytes, nor the same throughput
        at any step (a copy with one value changed still shares the others; a resumed leg shares
        its run's, and is no copy). A log with no throughput in it (a run a gate halted at its first
        step writes only its schedule) holds nothing of one run's own: two runs with one schedule
        write it alike, so it is not taken as a sign of copying.
        """
        seen: dict[tuple[str, ...], str] = {}
        by_id = {e.record.run.id: e.record for e in records if e.record is not None}
        for loaded in records:
            record = loaded.record
            if record is None or record.run.kind == "benchmark":
                continue
            when = (record.run.started.isoformat(), str(record.code.git_sha), record.run.kind)
            keys = [("start time, commit and kind", *when)]
            if any(a.path == METRICS_LOG for a in record.artifacts):
                clocked = _throughputs(loaded.path.parent)
                if clocked:
                    keys += [(METRICS_LOG, a.sha256) for a in record.artifacts if a.path == METRICS_LOG]
                keys += [("wall-clock throughput", repr(v)) for v in clocked]
            copied = next(
                (  # the resumed legs of one run share its start (tools/integrity/lineage.py), never a log
                    key
                    for key in keys
                    if key in seen
                    and (key[0] == METRICS_LOG or not same_run(record, by_id[seen[key]], by_id))
                ),
                None,
            )
            if copied is not None:
                self.fail(
                    INTEG_EVIDENCE,
                    loaded.path,
                    record.run.id,
                    f"has the {copied[0]} of {seen[copied]!r}: a copy of another record",
                )
            for key in keys:
                seen.setdefault(key, record.run.id)

    def check_prose_citations(self) -> None:
        """Every evidence path cited in README.md and docs/ resolves (a renamed report is caught), and
        every figure cited by a link into a record is the number it names there
        (tools/integrity/prose_figures.py)."""
        for source in prose_files(self.root):
            if not source.is_file():
                continue
            try:
                text = read_text(source, self.root)
            except Unreadable as exc:
                self.fail(INTEG_EVIDENCE, source, "", exc.problem)
                continue
            for lineno, problem in figure_problems(text, self.root):
                self.fail(INTEG_EVIDENCE, source, f"line {lineno}", problem)
        for source, lineno, match in prose_citations(self.root):
            run_dir = self.root / RUNS_DIR / match.group(1)
            target = run_dir / match.group(2).lstrip("/") if match.group(2) else run_dir / EVIDENCE_FILE
            if not target.is_file():
                self.fail(
                    INTEG_EVIDENCE,
                    source,
                    f"line {lineno}",
                    f"cites {match.group(0)}, which does not exist in the ledger",
                )

    def check_citations(self, citations: dict[str, list[Location]]) -> None:
        """Every gate id cited in code, tests, docs, evidence or README (`citations`: gate id → each
        mention) is in the spec."""
        for gate_id, places in citations.items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(INTEG_EVIDENCE, loc.file, f"line {loc.line}", f"cites unknown gate {gate_id}")

    def check_coverage(self, rows: list[CoverageRow], bindings: dict, falsifiers: dict) -> None:
        """ACTIVE gates have falsifiers (and runtime ones bindings); nothing binds an unknown gate."""
        for gate_id, places in bindings.items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(
                        INTEG_COVERAGE,
                        loc.file,
                        f"line {loc.line}",
                        f"orphan binding: {gate_id} is not in the spec",
                    )
        for gate_id, places in falsifiers.items():
            if gate_id not in self.spec.gates:
                for loc in places:
                    self.fail(INTEG_COVERAGE, loc.file, loc.name, f"falsifier cites unknown gate {gate_id}")
        for row in rows:
            gate = row.gate
            where = f"spec/{self.spec.gate_files[gate.id]}"
            if not active(gate):
                if gate.status.value == "PROPOSED" and not row.covered:
                    self.warn("PROPOSED", where, gate.id, "not yet covered (no falsifier or binding)")
                continue
            if not row.falsifiers:
                self.fail(
                    INTEG_COVERAGE, where, gate.id, "ACTIVE gate has no falsifier test (@pytest.mark.gate)"
                )
            if gate.kind is GateKind.RUNTIME and not row.bindings:
                self.fail(INTEG_COVERAGE, where, gate.id, "ACTIVE runtime gate has no contract binding")


def prose_citations(root: Path) -> Iterator[tuple[Path, int, re.Match[str]]]:
    """(file, line number, match) for every ledger path README.md and docs/ cite (a pattern such as
    evidence/runs/bench-trace-<time> is no citation)."""
    for source in prose_files(root):
        if not source.is_file():
            continue
        try:
            text = read_text(source, root)
        except Unreadable:
            continue  # the repository's own prose; what is cited in it is what is checked
        for lineno, line in enumerate(text.splitlines(), 1):
            for match in CITED_EVIDENCE_RE.finditer(line):
                if line[match.end() : match.end() + 1] not in ("<", "-"):
                    yield source, lineno, match


def prose_cited_runs(root: Path) -> set[str]:
    """The run ids README.md and docs/ cite."""
    return {match.group(1) for _, _, match in prose_citations(root)}


Derived = TypeVar("Derived")


def derived_once(loaded: LoadedEvidence, key: str, derive: Callable[[LoadedEvidence], Derived]) -> Derived:
    """`derive(loaded)`, worked out the first time `key` is asked of this record and kept with it
    (LoadedEvidence.derived says why)."""
    if key not in loaded.derived:
        loaded.derived[key] = derive(loaded)
    return loaded.derived[key]


def _cited_text(loaded: LoadedEvidence, name: str) -> str | None:
    """The text of a file the record cites beside it (its hash is checked with the record), or None."""
    return derived_once(loaded, f"text {name}", lambda e: _read_cited_text(e, name))


def _read_cited_text(loaded: LoadedEvidence, name: str) -> str | None:
    """`_cited_text`, read from the disk."""
    record = loaded.record
    if record is None or not any(a.path == name for a in record.artifacts):
        return None
    try:
        return read_text(loaded.path.parent / name, loaded.path.parent)
    except Unreadable:
        return None  # the record's own check names a cited file that does not read


def prepared_manifests(records: list[LoadedEvidence]) -> dict[str, dict]:
    """A prepare record's run id → the manifest.json it cites (its artifacts' hashes are checked with
    the record), for the records that read its data (tools/integrity/lineage.py)."""
    manifests = {}
    for loaded in records:
        record = loaded.record
        if record is None or record.run.kind != "prepare":
            continue
        manifest = derived_once(loaded, PREPARED_MANIFEST, _read_manifest)
        if isinstance(manifest, dict):
            manifests[record.run.id] = manifest
    return manifests


def _read_manifest(loaded: LoadedEvidence) -> Any:
    """The manifest.json a prepare record cites, parsed, or None."""
    if loaded.record is None or not any(a.path == PREPARED_MANIFEST for a in loaded.record.artifacts):
        return None
    try:
        return read_json(loaded.path.parent / PREPARED_MANIFEST, loaded.path.parent)
    except Unreadable:
        return None  # the record's own check names one that does not read


def _throughputs(run_dir: Path) -> list[float]:
    """The wall-clock throughputs a run's metrics log states (`tokens_per_s` of its step lines that
    are not whole numbers): measured by the clock, no two runs share one."""
    lines = [line for line in read_jsonl(run_dir / METRICS_LOG, run_dir) if isinstance(line, dict)]
    rates = [line.get("tokens_per_s") for line in lines if line.get("type") == "step"]
    return [rate for rate in rates if isinstance(rate, float) and not rate.is_integer()]


def released_state_problems(record: EvidenceRecord, state: object) -> list[str]:
    """What the record a release cites says of the model, against the state.json released (its
    checkpoint's): the step, the tokenizer's sha256, and the data it read (its reader's manifest)."""
    if not isinstance(state, dict):
        return [f"its {STATE_FILE} is not a JSON object"]
    tokenizer, reader = state.get("tokenizer"), state.get("reader")
    data = record.data
    stated = {
        "checkpoint.step": (record.checkpoint.step if record.checkpoint else None, state.get("step")),
        "data.tokenizer_sha256": (
            data.tokenizer_sha256 if data else None,
            tokenizer.get("sha256") if isinstance(tokenizer, dict) else None,
        ),
        "data.manifest_sha256": (
            data.manifest_sha256 if data else None,
            reader.get("manifest_sha256") if isinstance(reader, dict) else None,
        ),
    }
    return [
        f"evidence run {record.run.id!r}: {field} is {mine!r}, but the released {STATE_FILE} says {theirs!r}"
        for field, (mine, theirs) in stated.items()
        if mine is not None and theirs is not None and mine != theirs
    ]


def version_in(header: object) -> str | None:
    """The version a spec/spec.yaml states (its text, as `Checker._files_at` reads it), or None."""
    found = SPEC_VERSION_RE.search(header) if isinstance(header, str) else None
    return found.group(1) if found else None


def gate_thresholds(spec: Spec | None, gate_id: str) -> dict[str, float | int]:
    """`gate_id`'s thresholds in the spec checked; none where it did not load or lacks the gate."""
    gate = spec.gates.get(gate_id) if spec is not None else None
    return gate.threshold_values if gate is not None else {}


def standing(findings: list[Finding], spec: Spec | None) -> list[Finding]:
    """The violations that stand: each gate of COUNTED has its judge decide over its own findings.

    A finding is a measurement and the verdict is the judge's (contracts.release_rules.breaks),
    whichever path found it, a spec that does not load included, so a gate is decided in one place.
    A gate whose judge accepts its findings (only ever when a test forces it off) loses them. The
    judges get the thresholds of `spec`, the spec checked, not of the spec this process runs under.
    """
    accepted = {
        gate_id
        for gate_id in COUNTED
        if not breaks(gate_id, sum(f.rule == gate_id for f in findings), gate_thresholds(spec, gate_id))
    }
    return [f for f in findings if f.rule not in accepted]


def benchmark_goals(record: EvidenceRecord, goals: dict[object, dict]) -> dict[str, tuple[object, object]]:
    """metrics key → (the goal the record states, the goal of `goals`) for every goal a benchmark or
    gpu-check record states it was measured against."""
    metrics = record.metrics
    stated: dict[str, tuple[object, object]] = {}
    if record.run.kind == "gpu-check" and isinstance(metrics.get("goals"), dict):
        for name, row in metrics["goals"].items():
            if name in goals and isinstance(row, dict) and "goal" in row:
                stated[f"goals.{name}.goal"] = (row["goal"], goals[name].get("goal"))
        return stated
    name = metrics.get("benchmark")
    if record.run.kind != "benchmark" or not isinstance(name, str):
        return {}
    if name in goals and "goal" in metrics:
        stated["goal"] = (metrics["goal"], goals[name].get("goal"))
    also = metrics.get("also")
    for other in [name, *(also if isinstance(also, list) else [])]:
        goal = goals.get(other) if isinstance(other, str) else None  # no name: settings.bench_names says so
        key = f"goal_{goal.get('metric')}" if goal is not None else None
        if goal is not None and key in metrics:
            stated[key] = (metrics[key], goal.get("goal"))
    return stated


def sources_cited(record: EvidenceRecord) -> list[str]:
    """The files of the repository a record states something of (a preset it measured and its
    sections' defaults, tools/integrity/settings/preset_sources.py; the parser of the command it ran, whose
    defaults its config holds where its command line is silent, tools/integrity/settings/default_sources.py; a
    text it scored, tools/integrity/models/scored_text.py)."""
    cited = list(OPTIONS_SOURCES) if states_options(record) else []
    cited += [p for p in PRESET_SOURCES if p not in cited] if states_preset(record) else []
    cited += default_sources(record)
    cited += constant_sources(record)
    cited += [p for p in SPEED_SOURCES if p not in cited] if states_speed_model(record) else []
    cited += [p for p in line_sources(record) if p not in cited]
    return [*cited, *scored_texts(record)]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a check runs, and restore it after.

    A check keeps every record it reads until it ends and makes little garbage; at ten thousand
    records the collector's repeated traversals of them were a fifth of the check's time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@collector_paused()
def lineage_found(records: list[LoadedEvidence], root: Path) -> list[tuple[str, str]]:
    """(run id, problem) for every record of `records`, joined to each other (Checker.check_lineage)."""
    loaded = {e.record.run.id: e for e in records if e.record is not None}
    by_id = {run_id: e.record for run_id, e in loaded.items() if e.record is not None}
    manifests = prepared_manifests(records)
    shares = {
        run_id: planned
        for run_id, e in loaded.items()
        if (planned := logged_shares(e.record, _cited_text(e, METRICS_LOG))) is not None
    }
    return [
        *lineage_problems(by_id),
        *prepared_data_problems(by_id, manifests, shares),
        *evaluated_problems(by_id),
        *place_link_problems(by_id, lambda run_id: derived_once(loaded[run_id], "places", _places)),
        *cross_read_problems(by_id, root),
        *repeat_problems(
            by_id, lambda run_id: _cited_text(loaded[run_id], METRICS_LOG) if run_id in loaded else None
        ),
        *copy_problems(by_id, lambda run_id: _computed_log(loaded[run_id]), repeated_legs(by_id)),
        *twin_problems(by_id, lambda run_id: _computed_log(loaded[run_id])),
    ]


def _places(loaded: LoadedEvidence) -> Places:
    """The places a loaded record's command lines name (place_links.record_places)."""
    assert loaded.record is not None  # lineage joins the records that validated
    return record_places(loaded.record)


def _computed_log(loaded: LoadedEvidence) -> Lines | None:
    """The computed lines of the metrics.jsonl a record cites (one_run.py), or None without one."""
    return derived_once(loaded, f"computed {METRICS_LOG}", _read_computed_log)


def _read_computed_log(loaded: LoadedEvidence) -> Lines | None:
    """`_computed_log`, read from the disk (and parsed once for each content, `_computed_text`)."""
    record = loaded.record
    if record is None or not any(a.path == METRICS_LOG for a in record.artifacts):
        return None
    try:
        data = read_bytes(loaded.path.parent / METRICS_LOG)
    except (OSError, Unreadable):
        return None  # a log that cannot be read is its own record's finding
    return _computed_text(data)


@functools.lru_cache(maxsize=1024)
def _computed_text(data: bytes) -> Lines | None:
    """One log's computed lines, parsed once for each content: a runs-only check joins its runs to
    every record of the committed ledger, and a copy of the ledger holds the same logs elsewhere."""
    try:
        return canonical(computed_lines(decoded(data, METRICS_LOG)))
    except (Unreadable, ValueError, KeyError, TypeError):
        return None  # a log that is not JSON lines is its own record's finding


def _evidence_state(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file below evidence/ with its modification time and size: what the committed ledger's
    records and the files they cite are, as far as a cache of what was read from them can tell.
    Walked with os.walk and one lstat a file (links neither followed nor listed): a runs-only check
    takes this state every time, and pathlib's walk cost as much as the rest of a one-run check."""
    state = []
    for directory, _subdirs, names in os.walk(root / "evidence"):
        for name in names:
            path = os.path.join(directory, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                state.append((path, status.st_mtime_ns, status.st_size))
    return tuple(sorted(state))


@functools.lru_cache(maxsize=4)
def _committed(
    root: Path, _state: tuple[tuple[str, int, int], ...], context: tuple[Path, ...]
) -> tuple[tuple[LoadedEvidence, ...], frozenset[tuple[str, str]]]:
    """The committed ledger's records (and those of the `context` directories) and what its lineage
    checks find of them joined to each other, read once for each state of evidence/
    (`_evidence_state`)."""
    paths = [*evidence_paths(root), *(d / EVIDENCE_FILE for d in context)]
    records = tuple(load_evidence(p) for p in paths)
    return records, frozenset(lineage_found(list(records), root))


def committed_ledger(
    root: Path, context: Sequence[Path] = ()
) -> tuple[tuple[LoadedEvidence, ...], frozenset[tuple[str, str]]]:
    """The committed ledger a runs-only check joins its runs to, with its own lineage findings: a test
    suite checks hundreds of runs against one repository, and reading and judging its records again
    for each took longer than the check of the run itself. `context` adds record directories kept
    outside the ledger (the tests' fixtures) to what the runs are joined to."""
    return _committed(root.resolve(), _evidence_state(root), tuple(Path(d).resolve() for d in context))


def run_checks(
    root: Path,
    extra_runs: list[Path],
    runs_only: bool = False,
    context: Sequence[Path] = (),
    trust: Sequence[Path] = (),
) -> Report:
    """Every check over one repository and any extra run directories.

    `runs_only` checks just the extra runs (their schema, truth, artifacts and commit) against the
    repository's spec: what a user's CI asks of its own runs, whatever the state of the ledger,
    joined to the ledger and to the records of the `context` directories. `trust` names public key
    files trusted for every kind beside spec/signing.yaml's (`trusting`).
    """
    root = root.resolve()
    try:
        spec = load_spec_from(root / "spec")
    except BadInput as exc:
        return Report(standing([Finding(INTEG_EVIDENCE, "spec", "", str(exc))], None), [], [], 0)
    checker = Checker(root, spec, trust)
    if runs_only:
        return _check_runs(checker, extra_runs, context)
    # The audit of the code (which gates are bound and falsified, and whether the proof lock proves
    # today's code) reads only source files, none of the records. A process's first check runs it
    # in a second process on the second core while this one checks the records: `fork` starts it
    # with this process's imports already made; it is handed the root alone (arguments are pickled
    # on a thread of their own while this process goes on, so nothing it mutates may travel) and
    # reads the spec again itself. Its scans are cached by each file's text in the process that
    # makes them, so a process that checks again (a test session checks hundreds of repositories)
    # runs the audit itself, where its own first scan left the cache warm (0.2 s against 5 s cold).
    if next(_CHECKS):
        return _check_ledger(checker, extra_runs, _settled(_code_scans, root), _settled(_lock_findings, root))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as audit:
        scans = audit.submit(_code_scans, root)
        lock = audit.submit(_lock_findings, root)
        return _check_ledger(checker, extra_runs, scans, lock)


# How many full checks this process has begun (run_checks).
_CHECKS = itertools.count()


def _settled(work: Callable[[Path], Any], root: Path) -> Future:
    """`work(root)` run here and now, as a finished Future: its result or what it raised."""
    done: Future = Future()
    try:
        done.set_result(work(root))
    except Exception as exc:  # handed over as the second process's failure would be
        done.set_exception(exc)
    return done


def _lock_findings(root: Path) -> list[str]:
    """Why the proof lock of the repository at `root` does not prove its code (tools.integrity.proofs)."""
    return lock_findings(root, load_spec_from(root / "spec"))


Scans = tuple[dict[str, list[Location]], dict[str, list[Location]], dict[str, list[Location]]]


def _code_scans(root: Path) -> Scans:
    """gate id → where it is bound (stack/, contracts/), where a test falsifies it (tests/), and
    where any file mentions it."""
    return scan_bindings(root), scan_falsifiers(root), scan_citations(root)


def _checked_runs(checker: Checker, extra_runs: list[Path]) -> list[LoadedEvidence]:
    """Each extra run directory's record, checked against its own directory; records that share one
    run id and differ are named (`_shared_ids`)."""
    extra = []
    for run_dir in extra_runs:
        loaded = load_evidence(run_dir / "metadata.json")
        extra.append(loaded)
        checker.check_record(loaded, run_dir.resolve(), in_ledger=False)
    _shared_ids(checker, extra)
    return extra


def _shared_ids(checker: Checker, extra: list[LoadedEvidence]) -> None:
    """A warning on each run directory whose record shares its run id with another, different one
    checked after it: the checks that join records (copies, twins, lineage) read one record per id,
    the last, so this one is judged alone only. A training run's id is its directory's name, and an
    ES or surgery run's the second it started, so two runs checked together may share one; a
    ledger (--evidence-dir) gives each record its own."""
    last = {e.record.run.id: e for e in extra if e.record is not None}
    for loaded in extra:
        record = loaded.record
        kept = last.get(record.run.id) if record is not None else None
        if record is None or kept is None or kept is loaded or kept.record == record:
            continue
        checker.warn(
            SHARED_ID,
            loaded.path,
            record.run.id,
            f"shares its run id with {checker.named(kept.path)}, checked with it: the checks across records "
            "(copies, twins, lineage) read that one for the id, and this one alone; check them apart, or "
            "file both into one ledger (--evidence-dir), which gives each its own id",
        )


def _readable(checker: Checker, loaded: list[LoadedEvidence]) -> list[LoadedEvidence]:
    """The records whose cited files all read: only these are read together with other records
    (each one that does not is already a violation of its record)."""
    return [e for e in loaded if e.record is None or e.record.run.id not in checker.unreadable]


def _check_runs(checker: Checker, extra_runs: list[Path], context: Sequence[Path]) -> Report:
    """The extra runs alone, joined to the committed ledger, whose own findings are the full
    check's to report."""
    extra = _checked_runs(checker, extra_runs)
    with checker.guarded(RUNS_DIR, "", "commits"):
        checker.check_commits(extra)
    joined_extra = _readable(checker, extra)
    with checker.guarded(RUNS_DIR, "", "lineage"):
        checker.check_lineage(joined_extra, *committed_ledger(checker.root, context))
    with checker.guarded(REGISTRY_FILE, "", "releases"), contextlib.suppress(BadInput):
        # the registry's own form is the full check's to judge
        checker.check_releases_named(read_registry(checker.root / REGISTRY_FILE), {}, joined_extra)
    runs = tuple(checker.named(run) for run in extra_runs)
    return Report(checker.verdict(), checker.warnings, [], len(extra), checker.failures, runs)


def _check_ledger(checker: Checker, extra_runs: list[Path], scans: Future, lock: Future) -> Report:
    """The whole ledger and any extra runs, then the code audit's results (`scans`, `lock`) as the
    second process hands them over."""
    root = checker.root
    ledger = [load_evidence(p) for p in evidence_paths(root)]
    for loaded in ledger:  # a record's artifacts live in its own directory, never another run's
        checker.check_record(loaded, loaded.path.parent.resolve(), in_ledger=True)
    extra = _checked_runs(checker, extra_runs)
    with checker.guarded(RUNS_DIR, "", "commits"):
        checker.check_commits(ledger + extra)
    joined, joined_extra = _readable(checker, ledger), _readable(checker, extra)
    with checker.guarded(RUNS_DIR, "", "lineage"):
        checker.check_lineage(joined + joined_extra)
    with checker.guarded(RETIRED_FILE, "", "retirements"):
        try:
            checker.retired = read_retirements(root)
        except BadInput as exc:
            checker.fail(INTEG_EVIDENCE, root / RETIRED_FILE, "", str(exc))
    with checker.guarded(RUNS_DIR, "", "ledger"):
        checker.check_ledger_dirs()
        checker.check_ledger_history(checker.retired)
        checker.check_duplicates(joined)
    with checker.guarded(REGISTRY_FILE, "", "registry"):
        check_registry_file(checker, joined, joined + joined_extra)
    bindings, falsifiers, citations = scans.result()
    with checker.guarded("docs", "", "citation"):
        checker.check_citations(citations)
        checker.check_prose_citations()
    rows = coverage(checker.spec, bindings, falsifiers, ledger + extra)
    checker.check_coverage(rows, bindings, falsifiers)
    with checker.guarded(LOCK_FILE, "", "proof lock"):
        for problem in lock.result():
            checker.fail(INTEG_COVERAGE, root / LOCK_FILE, "proof lock", problem)
    runs = tuple(checker.named(run) for run in extra_runs)
    return Report(checker.verdict(), checker.warnings, rows, len(ledger) + len(extra), checker.failures, runs)


def check_registry_file(
    checker: Checker, ledger: list[LoadedEvidence], checked: list[LoadedEvidence]
) -> None:
    """The registry, read, each release against the ledger's records and the registry's history, and
    the retirements against both (tools/integrity/retirement.py)."""
    try:
        registry = read_registry(checker.root / REGISTRY_FILE)
    except BadInput as exc:
        checker.fail(INTEG_EVIDENCE, checker.root / REGISTRY_FILE, "", str(exc))
        checker.check_retirements(checker.retired, None)
        return
    checker.check_retirements(checker.retired, registry)
    by_id = {e.record.run.id: e for e in ledger if e.record is not None}
    checker.check_registry(registry, by_id)
    checker.check_registry_history(registry)
    checker.check_releases_named(registry, by_id, checked)


# How many warnings of one rule about the repository's own records the report a person reads shows
# before it counts the rest (`--all-warnings` shows every one, as `--json` always does).
WARNINGS_SHOWN = 3


def _inside(file: str, run: str) -> bool:
    """Whether a finding's `file` lies in the run directory `run` (both as findings name them)."""
    return file == run or file.startswith(run.rstrip("/") + "/")


def warning_lines(report: Report, every: bool = False) -> list[str]:
    """The warnings as a person reads them, by rule in the order each rule was first found: every
    finding about a --run directory (the runs the reader asked about), and of the others each
    rule's first WARNINGS_SHOWN and a line counting the rest; with `every`, all of them.

    A ledger of a hundred records warns once for each verdict judged under an earlier revision of
    its gate (STALE) and once for each record nothing signs (UNSIGNED): a few hundred lines, among
    which the one about the run a user has just trained would be lost."""
    by_rule: dict[str, list[Finding]] = {}
    for finding in report.warnings:
        by_rule.setdefault(finding.rule, []).append(finding)
    lines = []
    for rule, found in by_rule.items():
        others = hidden = 0
        for finding in found:
            if not any(_inside(finding.file, run) for run in report.runs):
                others += 1
                if others > WARNINGS_SHOWN and not every:
                    hidden += 1
                    continue
            lines.append(f"warning  {finding.line()}")
        if hidden:
            lines.append(
                f"warning  {rule}  and {hidden} more like these among the repository's records "
                "(--all-warnings lists every one)"
            )
    return lines


def render_human(report: Report, every_warning: bool = False) -> str:
    """The report as a person reads it: coverage table, then warnings (`warning_lines`), then
    violations."""
    lines = ["gate               status      kind       bindings  falsifiers  latest"] if report.rows else []
    for row in report.rows:
        latest = row.verdicts[0].label if row.verdicts else "-"
        lines.append(
            f"{row.gate.id:<18} {row.gate.status.value:<11} {row.gate.kind.value:<10} "
            f"{len(row.bindings):>8}  {len(row.falsifiers):>10}  {latest}"
        )
    active_rows = [r for r in report.rows if active(r.gate)]
    covered = sum(r.covered for r in active_rows)
    coverage_line = f"{covered}/{len(active_rows)} ACTIVE gates covered; " if report.rows else ""
    lines.append(f"\n{coverage_line}{report.records} evidence record(s) checked")
    lines += warning_lines(report, every_warning)
    for finding in report.violations:
        lines.append(f"VIOLATION  {finding.line()}")
    for finding in report.failures:
        lines.append(f"FAILED  {finding.line()}")
    if report.failures:
        lines.append(
            f"integrity: NO VERDICT: the checker failed {len(report.failures)} time(s) "
            f"({len(report.violations)} violation(s) found besides)"
        )
    else:
        lines.append(
            "integrity: OK" if not report.violations else f"integrity: {len(report.violations)} violation(s)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help="repository to check (default: this one)",
    )
    parser.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="also check the evidence of this run directory, or of every run directory of this ledger "
        "(the folder --evidence-dir files records in)",
    )
    parser.add_argument(
        "--runs-only",
        action="store_true",
        help="check only the --run directories (their records' truth), not the repository's ledger",
    )
    parser.add_argument(
        "--trust-key",
        type=Path,
        action="append",
        default=[],
        metavar="PUBLIC_KEY",
        help="also trust this PEM public key (one you hold outside the repository) to have signed any "
        "record or release, beside the keys spec/signing.yaml trusts",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--all-warnings",
        action="store_true",
        help=f"list every warning; by default each kind's first {WARNINGS_SHOWN} about the repository's "
        "records and a count of the rest (every warning about a --run directory is listed)",
    )
    parser.add_argument(
        "--record",
        metavar="RUN_ID",
        help="check one record of the ledger by its id; a retired one is verified from git history",
    )
    parser.add_argument(
        "--replay",
        type=Path,
        metavar="RUN",
        help="run a training record's first steps again from its config and --data, and compare them with "
        "its log bit for bit (tools/integrity/replay.py)",
    )
    parser.add_argument("--data", type=Path, metavar="DATA_DIR", help="with --replay: the data the run read")
    parser.add_argument("--steps", type=int, default=5, help="with --replay: how many steps (default 5)")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="CKPT",
        help="with --replay: the checkpoint a fine-tune started from",
    )
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay_main(args)
    if args.record is not None:
        return record_main(args.root.resolve(), args.record)
    if not (args.root / "spec").is_dir():
        print(
            f"check_integrity: {args.root} has no spec/ directory; pass --root the repository",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.runs_only and not args.run:
        print("check_integrity: --runs-only needs at least one --run RUN_DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # the spec the stack's own checks read as they replay a record (GATESTACK_SPEC, if set)
        runs = runs_named(args.run)
        trusting(load_spec().signing, args.trust_key)  # and each --trust-key, refused here in one line
    except BadInput as exc:
        print(f"check_integrity: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        report = run_checks(args.root, runs, runs_only=args.runs_only, trust=args.trust_key)
    except Exception as exc:
        print(
            f"check_integrity: internal error, no verdict ({type(exc).__name__}: {exc}); "
            f"traceback saved to {saved_traceback()}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    print(json.dumps(report.to_json(), indent=2) if args.json else render_human(report, args.all_warnings))
    return report.exit_code()


def saved_traceback() -> Path:
    """The traceback of the exception being handled, written to a file of its own in the system's
    temporary directory: a finding or an error line names it, and the report stays one line each."""
    handle, name = tempfile.mkstemp(prefix="check_integrity-", suffix=".traceback.txt")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(traceback.format_exc())
    return Path(name)


def record_main(root: Path, run_id: str) -> int:
    """--record: one record checked (joined to the ledger), or a retired one verified from history:
    0 when it holds, 1 when it does not, 2 when the ledger never held it."""
    run_dir = root / RUNS_DIR / run_id
    if (run_dir / EVIDENCE_FILE).is_file():
        report = run_checks(root, [run_dir], runs_only=True)
        print(render_human(report))
        return 1 if report.violations else 0
    try:
        retirements = read_retirements(root)
        registry = read_registry(root / REGISTRY_FILE)
    except BadInput as exc:
        print(f"check_integrity: {exc}", file=sys.stderr)
        return 2
    path = f"{RUNS_DIR.as_posix()}/{run_id}"
    entry = retirements.by_path().get(path)
    if entry is None:
        print(
            f"check_integrity: {run_id} is neither in {RUNS_DIR} nor retired in {RETIRED_FILE}",
            file=sys.stderr,
        )
        return 2
    mine = Retirements(retired=[entry])
    problems = [
        p for p in retirement_problems(root, mine, registry, prose_cited_runs(root)) if p.where == path
    ]
    for problem in problems:
        print(f"VIOLATION  {INTEG_EVIDENCE}  {RETIRED_FILE} [{run_id}]: {problem.message}")
    print(
        f"{run_id}: retired ({entry.reason}); its {len(entry.files)} file(s) are the blobs git holds at "
        f"{entry.commit[:12]} (git show {entry.commit[:12]}:{path}/{EVIDENCE_FILE}); it passed the "
        f"check under spec {entry.verified_under} when it was retired"
    )
    return 1 if problems else 0


def replay_main(args: argparse.Namespace) -> int:
    """--replay: 0 when the steps replay bit for bit, 3 when one differs, 2 on bad input.

    A difference is a GATE-INTEG-001 finding (the record is not true to its run), decided by the
    gate's judge like every other.
    """
    from tools.integrity.replay import replay

    if args.data is None or args.steps < 1:
        print(
            "check_integrity: --replay RUN needs --data DATA_DIR (and --steps of at least 1)", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    if not (args.replay / "metadata.json").is_file():
        print(
            f"check_integrity: {args.replay} has no metadata.json; pass a record's directory", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    try:
        result = replay(args.replay, args.data, args.steps, args.init_from)
    except BadInput as exc:
        print(f"check_integrity: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    differences = result.differences if breaks(INTEG_EVIDENCE, len(result.differences)) else []
    for difference in differences:
        print(f"REPLAY  {result.run}: {difference}")
    verdict = "bit for bit" if not differences else f"{len(differences)} difference(s)"
    print(f"replay: {result.steps} step(s) of {result.run}: {verdict}")
    return EXIT_GATE if differences else EXIT_OK
