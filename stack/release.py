"""`stack release`: a finished training run's checkpoint as a model directory that loads as it is.

A release is MODELS_DIR/NAME-VERSION/ holding model.safetensors and state.json (config and
tokenizer) copied from the checkpoint the run's record hashed, a manifest.json listing exactly
those two files (a weights-only checkpoint: every reader accepts it, `--resume` does not), and a
MODEL_CARD.md written from the record. Its registry entry is appended to the registry file,
whose earlier text is kept byte for byte, and cites the filed record by content.

Weights too large for a git repository (a `gpt2` model's are 440 MB) are kept elsewhere:
with `--weights-url` the weights are not copied, the registry cites them by that URL with the
record's sha256 and size, and a .gitignore keeps a copy downloaded into the directory (where the
readers look for it) out of git.

Nothing is written until every rule has been checked: the ledger record must be a filed copy of
RUN_DIR's own record, the checkpoint it names must still hash as recorded, and the record must
pass `contracts.release_rules.release_problems`, the same rules the integrity check applies to
the registry, judged by the same judge (GATE-INTEG-001's). So a release this command makes is one
the checker accepts.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from contracts.checkpoints import WEIGHTS_FILES, released_manifest
from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    LEDGER_DIR,
    REPO_ROOT,
    CheckpointRef,
    EvidenceRecord,
    atomic_write_bytes,
    leg_of,
    read_evidence,
    sha256_file,
)
from contracts.model_card import CARD_FILE, model_card
from contracts.reading import load_yaml
from contracts.registry import REGISTRY_FILE, Registry, RegistryArtifact, ReleasedModel, read_registry
from contracts.release_rules import INTEG_EVIDENCE, WEIGHTS_FILE, breaks, release_problems, stale_gates
from contracts.signing import MODEL_BUNDLE, configured_key, sign_model
from contracts.spec import SEMVER_RE, load_spec
from stack.outputs import ledger, rundir
from stack.train import checkpoint as ckpt

# A release is one artifact, built aside and moved into place; it is never replaced (no --force).
WRITER = rundir.Writer("stack release")


@dataclass(frozen=True)
class ReleaseRequest:
    """What the command line asked for."""

    run_dir: Path
    ledger_record: Path
    name: str
    version: str
    license: str
    models_dir: Path
    registry: Path
    # Each waived blocking gate the release accepts, with why (--accept-waiver GATE --reason TEXT).
    accepted: dict[str, str] = field(default_factory=dict)
    # Where the weights are kept when they are not copied into the repository (--weights-url).
    weights_url: str | None = None


@dataclass(frozen=True)
class Release:
    """Where the release went and the registry entry it got."""

    directory: Path
    entry: ReleasedModel
    source: Path  # the run's checkpoint the files were released from
    started_registry: bool = False  # the repository's first release, which started its registry


def repository_of(registry: Path) -> Path:
    """The repository a registry file belongs to: paths in the registry are relative to it.

    A repository with a ledger (evidence/runs/) and no registry yet is one whose first release
    this is: its registry is started (`registry_text`). Without either, the command was most
    likely run from somewhere else, and is refused."""
    registry = Path(registry).resolve()
    if registry.parts[-len(REGISTRY_FILE.parts) :] != REGISTRY_FILE.parts:
        raise BadInput(
            f"--registry {registry} is not <repository>/{REGISTRY_FILE.as_posix()}; pass the registry "
            "file of the repository the model is released into"
        )
    root = registry.parents[len(REGISTRY_FILE.parts) - 1]
    if not registry.is_file() and not (root / LEDGER_DIR).is_dir():
        raise BadInput(
            f"no registry at {registry} and no ledger at {root / LEDGER_DIR}; run from the repository "
            "root or pass --registry (a repository's first release starts its registry once its ledger "
            "holds the run's record: stack train ... --evidence-dir <repository>/evidence/runs)"
        )
    return root


# What a registry started by a repository's first release opens with (`registry_text`).
_NEW_REGISTRY = (
    "# Released models, appended by `stack release`: each entry cites the ledger record that backs\n"
    "# it (evidence/runs/<id>/) by id and by the sha256 of its metadata.json, and its weights by path\n"
    "# (or URL) with sha256 and size. Entries are never deleted; one that no longer stands is\n"
    "# withdrawn, with the reason.\n"
    "models:\n"
)
# An empty flow-style list, which a block-style entry cannot follow: `models: []`.
_EMPTY_FLOW_LIST = re.compile(r"^models:[ \t]*\[[ \t]*\][ \t]*(#.*)?$", re.MULTILINE)


def registry_text(path: Path) -> tuple[Registry, str]:
    """The registry at `path` and the text an entry is appended to. A registry not there yet (a
    repository's first release, `repository_of`) starts empty under a header saying what it is;
    an empty one written `models: []` is taken as `models:` (the one line changed), since a block
    entry cannot follow a flow list and a user starting a registry writes it either way."""
    if not Path(path).is_file():
        return Registry(), _NEW_REGISTRY
    registry = read_registry(path)
    text = Path(path).read_text(encoding="utf-8")
    if not registry.models and len(_EMPTY_FLOW_LIST.findall(text)) == 1:
        text = _EMPTY_FLOW_LIST.sub("models:", text)
    return registry, text


def filed_record(run_dir: Path, ledger_record: Path, root: Path) -> tuple[EvidenceRecord, bytes]:
    """The ledger's copy of RUN_DIR's record, and its bytes (the registry cites them by sha256).

    A run resumed with --evidence-dir is filed once per leg (stack.outputs.ledger): a record of
    any of its legs names the run, and the newest filed leg is the one released, said in one line
    when it is not the one named (an earlier leg's checkpoint is not what the run ended with).
    """
    own = read_evidence(Path(run_dir) / EVIDENCE_FILE)
    path = Path(ledger_record) / EVIDENCE_FILE
    record = read_evidence(path)
    same_run = leg_of(record.run.id)[0] == leg_of(own.run.id)[0] and record.run.started == own.run.started
    if not same_run:
        raise BadInput(
            f"--ledger-record {ledger_record} is run {record.run.id!r}, not {run_dir}'s own run "
            f"{own.run.id!r}; pass the record that run filed with --evidence-dir"
        )
    newest = ledger.newest_leg(Path(ledger_record).parent, record)
    if newest != record.run.id:
        print(
            f"stack release: note: {record.run.id} is an earlier leg of the run; releasing its newest "
            f"filed leg {newest}",
            file=sys.stderr,
        )
        path = Path(ledger_record).parent / newest / EVIDENCE_FILE
        record = read_evidence(path)
    if (
        own.checkpoint is not None
        and record.checkpoint is not None
        and own.checkpoint.step > record.checkpoint.step
    ):
        print(
            f"stack release: note: {run_dir} trained on to step {own.checkpoint.step}, past its newest "
            f"filed leg {record.run.id} (step {record.checkpoint.step}); releasing the checkpoint that "
            "leg's record hashed (a leg is filed when it is resumed with --evidence-dir)",
            file=sys.stderr,
        )
    expected = root / LEDGER_DIR / record.run.id
    if path.parent.resolve() != expected.resolve():
        raise BadInput(
            f"--ledger-record {ledger_record} is not {expected}: the registry cites records of its own "
            f"repository's ledger; file the run there (stack train ... --evidence-dir {root / LEDGER_DIR})"
        )
    return record, path.read_bytes()


def source_checkpoint(run_dir: Path, record: EvidenceRecord) -> tuple[Path, CheckpointRef]:
    """RUN_DIR's checkpoint that the record hashed, verified file by file against those hashes."""
    ref = record.checkpoint
    if ref is None:
        raise BadInput(
            f"the record of {record.run.id} names no checkpoint to release; release a run whose "
            "record hashes its last checkpoint (evidence schema 2 or later)"
        )
    source = Path(run_dir) / ckpt.CKPT_DIR / ref.name
    for name in WEIGHTS_FILES:
        hashed, path = ref.files.get(name), source / name
        if hashed is None:
            raise BadInput(
                f"the record of {record.run.id} hashes no {name} of {ref.name}; it cannot be released"
            )
        if not path.is_file():
            raise BadInput(f"{path} is missing: {run_dir} no longer holds the checkpoint its record names")
        if path.stat().st_size != hashed.bytes or sha256_file(path) != hashed.sha256:
            raise BadInput(
                f"{path} is not the file the record of {record.run.id} hashed; release from the run "
                "directory that record describes"
            )
    return source, ref


def refuse_unreleasable(record: EvidenceRecord, ref: CheckpointRef, accepted: dict[str, str]) -> None:
    """Refuse a record the integrity check would refuse to see released (contracts.release_rules).

    The refusal is GATE-INTEG-001's verdict over the problems found, given by its judge as in the
    check, so the rules and the verdict are the checker's both.
    """
    spec = load_spec()
    released = [(name, ref.files[name].sha256, ref.files[name].bytes) for name in WEIGHTS_FILES]
    stale = stale_gates(record, spec)
    problems = release_problems(spec, record, stale, released, record.code.git_sha, accepted)
    if breaks(INTEG_EVIDENCE, len(problems)):
        raise BadInput(
            f"cannot release from evidence run {record.run.id!r}: {'; '.join(problems)}; release a "
            "completed training run made from a clean, committed tree that judged every gate and failed none"
        )


def _relative(path: Path, root: Path) -> str:
    """`path` as the registry writes it: relative to the repository, in posix form."""
    return Path(path).resolve().relative_to(root).as_posix()


def release_entry(
    request: ReleaseRequest, root: Path, target: Path, record: EvidenceRecord, ref: CheckpointRef, raw: bytes
) -> ReleasedModel:
    """The registry entry of this release; a bad --name is refused here, before anything is written."""
    files = ref.files
    data = {
        "name": request.name,
        "version": request.version,
        "spec_version": load_spec().version,
        "git_sha": record.code.git_sha,
        "evidence": [{"run": record.run.id, "sha256": hashlib.sha256(raw).hexdigest()}],
        "artifacts": [
            {
                **_location(request, root, target, name),
                "sha256": files[name].sha256,
                "bytes": files[name].bytes,
            }
            for name in WEIGHTS_FILES
        ],
        "license": request.license,
        "card": _relative(target / CARD_FILE, root),
        "accepted_waivers": [{"gate": gate, "reason": why} for gate, why in sorted(request.accepted.items())],
    }
    try:
        return ReleasedModel.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise BadInput(
            f"the registry entry's {field} is invalid ({error['msg']}); a --name is lower-case letters, "
            "digits, '.', '_' and '-'"
        ) from None


def _location(request: ReleaseRequest, root: Path, target: Path, name: str) -> dict[str, str]:
    """Where the registry says the released file `name` is: its URL for weights kept elsewhere,
    else its path in the repository."""
    if name == WEIGHTS_FILE and request.weights_url is not None:
        return {"url": request.weights_url}
    return {"path": _relative(target / name, root)}


def release_target(request: ReleaseRequest, root: Path) -> Path:
    """MODELS_DIR/NAME-VERSION, inside the repository and not there yet."""
    if not SEMVER_RE.match(request.version):
        raise BadInput(f"--version {request.version!r} is not a semantic version; use one such as 0.2.0")
    target = Path(request.models_dir) / f"{request.name}-{request.version}"
    if not target.resolve().is_relative_to(root):
        raise BadInput(f"--models-dir {request.models_dir} is outside {root}, whose registry must cite it")
    if target.exists() or target.is_symlink():
        raise BadInput(f"{target} already exists; a release is never replaced: choose a new --version")
    rundir.check(target, WRITER, option="--models-dir")
    return target


def appended_registry(path: Path, entry: ReleasedModel) -> bytes:
    """The registry file with `entry` appended after its last line; the earlier text is untouched
    (but for an empty `models: []`, `registry_text`).

    The result is parsed back before anything is written: it must read as the old models plus
    this one, which holds only when the models list is the file's last block.
    """
    registry, text = registry_text(path)
    if any(model.key == entry.key for model in registry.models):
        raise BadInput(
            f"{path} already lists {entry.key}; a release is never replaced: choose a new --version"
        )
    block = yaml.safe_dump(
        [entry.model_dump(mode="json", exclude_defaults=True)], sort_keys=False, allow_unicode=True, width=100
    )
    indented = "".join(f"  {line}" if line.strip() else line for line in block.splitlines(keepends=True))
    new = text + ("\n" if text and not text.endswith("\n") else "") + indented
    try:
        parsed = Registry.model_validate(load_yaml(new))
    except (yaml.YAMLError, ValidationError):
        parsed = None
    if parsed is None or parsed.models != [*registry.models, entry]:
        raise BadInput(
            f"cannot append to {path}: its `models:` list must be the last block of the file, in block "
            "style; move it to the end and try again"
        )
    return new.encode("utf-8")


def _copy(source: Path, staging: Path, ref: CheckpointRef, names: tuple[str, ...]) -> None:
    """Copy the weights-only files `names` into `staging`, each checked against the record's hash
    (so the manifest the record gives, `released_manifest`, is the copies')."""
    for name in names:
        shutil.copyfile(source / name, staging / name)
        if sha256_file(staging / name) != ref.files[name].sha256:
            raise BadInput(f"the copy of {source / name} does not hash as the record says; check the disk")


def publish(
    target: Path, source: Path, ref: CheckpointRef, card: str, weights_kept_elsewhere: bool, key: Path | None
) -> Path | None:
    """Assemble the release beside `target` (copies, manifest, card), sign it with `key` when one is
    configured (contracts.signing.sign_model), then move it into place whole (stack.outputs.rundir).
    Weights kept elsewhere are not copied; a .gitignore names them, so a copy downloaded beside the
    manifest leaves the tree clean (the bundle then signs the manifest, which names their sha256).
    Returns the bundle's path in `target`, or None for an unsigned release."""
    with rundir.opened(target, WRITER, option="--models-dir") as opened:
        if weights_kept_elsewhere:
            _copy(source, opened.where, ref, tuple(n for n in WEIGHTS_FILES if n != WEIGHTS_FILE))
            atomic_write_bytes(opened.where / ".gitignore", f"/{WEIGHTS_FILE}\n".encode())
        else:
            _copy(source, opened.where, ref, WEIGHTS_FILES)
        atomic_write_bytes(opened.where / ckpt.MANIFEST, released_manifest(ref))
        atomic_write_bytes(opened.where / CARD_FILE, card.encode("utf-8"))
        if key is not None:
            sign_model(opened.where, key)
        opened.commit()
    return None if key is None else target / MODEL_BUNDLE


def release(request: ReleaseRequest) -> Release:
    """Check everything, then write MODELS_DIR/NAME-VERSION and append the registry entry."""
    root = repository_of(request.registry)
    key = configured_key(REPO_ROOT, root)
    record, raw = filed_record(request.run_dir, request.ledger_record, root)
    source, ref = source_checkpoint(request.run_dir, record)
    refuse_unreleasable(record, ref, request.accepted)
    target = release_target(request, root)
    entry = release_entry(request, root, target, record, ref, raw)
    started = not Path(request.registry).is_file()
    appended = appended_registry(request.registry, entry)
    card = model_card(entry, record, ref, _relative(target, root))
    bundle = publish(target, source, ref, card, request.weights_url is not None, key)
    if bundle is not None:
        cited = RegistryArtifact(
            path=_relative(bundle, root), sha256=sha256_file(bundle), bytes=bundle.stat().st_size
        )
        entry = entry.model_copy(update={"signature": cited})
        appended = appended_registry(request.registry, entry)
    atomic_write_bytes(request.registry, appended)
    return Release(target, entry, source, started)
