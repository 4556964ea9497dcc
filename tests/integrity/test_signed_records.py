"""Signed records and signed releases (contracts/signing.py): what a forger who re-hashes cannot redo.

Each forgery a re-hash alone hides from the other checks (a record and its result edited together,
weights swapped with their hash, a log rewritten consistently, argv edited) is
planted in a copy of a fixture record, re-hashed as a forger would. On a record signed when filed it
is caught: the record no longer hashes to what was signed. On an unsigned record it still passes,
and the check says, as a warning, what an unsigned record cannot prove.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts.evidence
from contracts.errors import BadInput
from contracts.evidence import (
    EVIDENCE_FILE,
    REPO_ROOT,
    CheckpointRef,
    CodeInfo,
    FileHash,
    file_record,
    read_evidence,
    sha256_file,
)
from contracts.registry import REGISTRY_FILE, RegistryArtifact, ReleasedModel, read_registry
from contracts.signing import (
    ATTESTATION_FILE,
    MODEL_BUNDLE,
    SIGNING_KEY_ENV,
    model_problems,
    sign_record,
    signature_problems,
    trusting,
    unsigned_problem,
)
from contracts.spec import RELEASE_KIND, SigningPolicy, load_spec_from
from stack.cli import main as stack_main
from stack.release import publish
from tests.support.ledger_support import RECORDS, edited, fixture_dirs, forger_finished, log_lines, write_log
from tests.support.release_support import head, release_argv
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.audit import load_evidence
from tools.integrity.check import Checker, main, run_checks
from tools.integrity.record_checks import RecordFindings, check_policies
from tools.records.scratch import bump_policy

ROOT = Path(__file__).resolve().parents[2]
Change = Callable[[dict[str, Any], Path], None]
SIGNED_AWAY = f"no longer hashes to what {ATTESTATION_FILE} signed"
UNPROVABLE = "is unsigned: nothing proves it is the record its run filed"


def make_key(where: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 key pair written outside the repository: (private key, public key)."""
    where.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    key, pub = where / "signing-key.pem", where / "signing-key.pub"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("keys"))


def copied(tmp_path: Path, run: str, key: Path | None) -> Path:
    """A copy of fixture record `run`, signed with `key` as `file_record` signs a filed one."""
    target = tmp_path / Path(run).name
    shutil.copytree(RECORDS / run, target)
    if key is not None:
        sign_record(target, read_evidence(target / EVIDENCE_FILE), key)
    return target


def report_of(run_dir: Path, *trusted: Path) -> tuple[list[str], list[str]]:
    """The check's (violations, warnings) of `run_dir`, trusting the public keys `trusted`."""
    report = run_checks(ROOT, [run_dir], runs_only=True, context=fixture_dirs(), trust=list(trusted))
    return [f.line() for f in report.violations], [f.line() for f in report.warnings]


def _result_edited(data: dict[str, Any], run_dir: Path) -> None:
    """The sample's last drawn token and its text changed together in sample.json, and the record
    made to agree by a perfect forger: a continuation the model never produced."""
    path = run_dir / "sample.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    result["drawn"][-1] = ord("e")
    result["text"] = result["text"][:-1] + "e"
    path.write_text(json.dumps(result) + "\n", encoding="utf-8")


def _weights_swapped(data: dict[str, Any], run_dir: Path) -> None:
    """The run's last checkpoint's weights replaced, and the record made to hash the replacement."""
    data["checkpoint"]["files"]["model.safetensors"]["sha256"] = "ab" * 32


def _log_rewritten(data: dict[str, Any], run_dir: Path) -> None:
    """The throughput doubled in every step line of the log, consistently."""
    lines = log_lines(run_dir)
    for line in lines:
        if "tokens_per_s" in line:
            line["tokens_per_s"] *= 2
    write_log(run_dir, lines)


def _argv_edited(data: dict[str, Any], run_dir: Path) -> None:
    """The command line made to name another ledger than the one the record was filed into."""
    argv, places = data["run"]["argv"], data["run"]["places"]
    at = argv.index("--evidence-dir") + 1
    moved = argv[at].replace("/ledger", "/ledger-b")
    places[moved] = places.pop(argv[at]).replace("/ledger", "/ledger-b")
    argv[at] = moved


FORGERIES: dict[str, tuple[str, Change]] = {
    "result-edited-with-its-record": ("current/sample", forger_finished(_result_edited)),
    "weights-swapped-with-their-hash": ("current/mix-run", _weights_swapped),
    "log-rewritten-consistently": ("current/mix-run", forger_finished(_log_rewritten)),
    "argv-edited": ("current/eval", _argv_edited),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forgery_of_a_signed_record_is_caught(
    forgery: str, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    run, change = FORGERIES[forgery]
    forged = edited(copied(tmp_path, run, key), change)
    violations, _ = report_of(forged, pub)
    assert any(f"metadata.json {SIGNED_AWAY}" in line for line in violations), "\n".join(violations)


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_the_same_forgery_of_an_unsigned_record_is_named_unprovable(forgery: str, tmp_path: Path) -> None:
    run, change = FORGERIES[forgery]
    forged = edited(copied(tmp_path, run, None), change)
    violations, warnings = report_of(forged)
    assert violations == [], "the forgery is one the unsigned check can catch: pick one it cannot"
    assert any(UNPROVABLE in line for line in warnings), "\n".join(warnings)


@pytest.mark.parametrize("run", ["current/eval", "current/mix-run"])
def test_a_signed_record_left_alone_verifies(run: str, tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    violations, warnings = report_of(copied(tmp_path, run, key), pub)
    assert violations == []
    assert not any("unsigned" in line for line in warnings)


def test_a_result_file_edited_and_rehashed_is_named(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The artifact itself is a signed subject: its new digest is named, not only the record's."""
    key, pub = keys
    forged = edited(copied(tmp_path, "current/sample", key), forger_finished(_result_edited))
    violations, _ = report_of(forged, pub)
    assert any(f"sample.json {SIGNED_AWAY}" in line for line in violations), "\n".join(violations)


def test_a_record_signed_by_another_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    stranger, _ = make_key(tmp_path / "stranger")
    _, pub = keys
    violations, _ = report_of(copied(tmp_path, "current/eval", stranger), pub)
    assert any("signature does not verify against any key" in line for line in violations), violations


def test_a_signature_no_key_is_trusted_for_proves_nothing(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, _ = keys
    violations, _ = report_of(copied(tmp_path, "current/eval", key))
    assert any("trusts no key for run kind 'eval'" in line for line in violations), violations


def test_an_envelope_re_signed_for_another_record_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """A signed envelope moved beside another record signs that record's neighbour, not it."""
    key, pub = keys
    record = copied(tmp_path, "current/eval", None)
    other = copied(tmp_path / "other", "current/mix-run", key)
    shutil.copy(other / ATTESTATION_FILE, record / ATTESTATION_FILE)
    problems = signature_problems(
        record, read_evidence(record / EVIDENCE_FILE), trusting(SigningPolicy(), [pub])
    )
    assert any("was signed for run" in p for p in problems), problems


def test_a_kind_the_policy_requires_signed_is_a_violation_unsigned() -> None:
    required = SigningPolicy(required=["eval"])
    assert unsigned_problem(required, "eval")[1]
    assert not unsigned_problem(required, "train")[1]
    assert unsigned_problem(SigningPolicy(required=["*"]), "train")[1]


def test_the_policy_is_a_revised_spec_file(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """spec/signing.yaml trusts keys and requires kinds under the revision rules of every policy:
    edited without a bump it does not load; bumped, it does, and a kind it misnames is refused."""
    _, pub = keys
    shutil.copytree(ROOT / "spec", tmp_path / "spec")
    path = tmp_path / "spec" / "signing.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "trusted_keys": [{"name": "ci", "public_key": pub.read_text(), "kinds": ["*"]}],
                "required": ["eval"],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match="signing"):
        load_spec_from(tmp_path / "spec")
    bump_policy(tmp_path, "signing")
    spec = load_spec_from(tmp_path / "spec")
    assert spec.signing.required == ["eval"] and spec.policies["signing"].revision == 2
    path.write_text(yaml.safe_dump({"trusted_keys": [], "required": ["evals"]}), encoding="utf-8")
    bump_policy(tmp_path, "signing")
    with pytest.raises(BadInput, match="'evals', which is no run kind"):
        load_spec_from(tmp_path / "spec")


def test_filing_signs_when_a_key_is_configured(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keys
    record = read_evidence(RECORDS / "current" / "eval" / EVIDENCE_FILE)
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    unsigned = file_record(tmp_path / "plain", record, (RECORDS / "current" / "eval" / "eval.json",))
    assert not (unsigned.parent / ATTESTATION_FILE).exists()
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    path = file_record(tmp_path / "ledger", record, (RECORDS / "current" / "eval" / "eval.json",))
    filed = read_evidence(path)
    assert (path.parent / ATTESTATION_FILE).is_file()
    assert signature_problems(path.parent, filed, trusting(SigningPolicy(), [pub])) == []
    statement = json.loads(
        __import__("base64").b64decode(json.loads((path.parent / ATTESTATION_FILE).read_text())["payload"])
    )
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in statement["subject"]} == {"metadata.json", "eval.json"}
    assert statement["predicate"]["command"] == record.run.argv
    assert statement["predicate"]["verdicts"] == {g.id: str(g.verdict) for g in record.gates}


def test_a_key_inside_the_repository_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    key, _ = make_key(repo / "keys")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    record = read_evidence(RECORDS / "current" / "eval" / EVIDENCE_FILE)
    with pytest.raises(BadInput, match="inside the repository") as refused:
        file_record(repo / "evidence" / "runs", record)
    assert "\n" not in str(refused.value)
    assert not (repo / "evidence" / "runs").exists()


def test_a_key_file_that_is_no_key_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = tmp_path / "keys" / "not-a-key.pem"
    bogus.parent.mkdir()
    bogus.write_text("hello\n")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(bogus))
    record = read_evidence(RECORDS / "current" / "eval" / EVIDENCE_FILE)
    with pytest.raises(BadInput, match="not an unencrypted PEM private key"):
        file_record(tmp_path / "ledger", record)


def test_check_integrity_refuses_a_trust_key_that_is_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "nothing.pub"
    bogus.write_text("hello\n")
    assert main(["--runs-only", "--run", str(RECORDS / "current" / "eval"), "--trust-key", str(bogus)]) == 2
    assert "is not a PEM public key file" in capsys.readouterr().err


def _released(tmp_path: Path, key: Path | None) -> Path:
    """A release directory written by `stack release`'s publishing step from a checkpoint of two files."""
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (source / "state.json").write_text('{"step": 1}\n')
    ref = CheckpointRef(
        name="step-0000001",
        step=1,
        files={
            name: FileHash(sha256=sha256_file(source / name), bytes=(source / name).stat().st_size)
            for name in ("model.safetensors", "state.json")
        },
    )
    target = tmp_path / "models" / "tiny-0.1.0"
    target.parent.mkdir()
    bundle = publish(target, source, ref, "# tiny 0.1.0\n", False, key)
    assert (bundle is None) == (key is None)
    return target


def model_signing_verify(directory: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    """`model_signing verify key`, model-signing's own command, run as a user who downloaded it would."""
    cli = Path(sys.executable).parent / "model_signing"
    argv = [str(cli), "verify", "key", str(directory), "--signature", str(directory / MODEL_BUNDLE)]
    return subprocess.run([*argv, "--public_key", str(pub)], capture_output=True, text=True, check=False)


def test_a_release_verifies_with_model_signing_alone(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    target = _released(tmp_path, key)
    assert (target / MODEL_BUNDLE).is_file()
    done = model_signing_verify(target, pub)
    assert done.returncode == 0, done.stdout + done.stderr
    assert model_problems(target, trusting(SigningPolicy(), [pub])) == []


def test_a_release_with_its_weights_swapped_fails_verification(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    target = _released(tmp_path, key)
    (target / "model.safetensors").write_bytes(bytes(reversed(range(256))) * 64)
    done = model_signing_verify(target, pub)
    assert done.returncode != 0
    problems = model_problems(target, trusting(SigningPolicy(), [pub]))
    assert problems and "model.safetensors" in problems[0], problems


def test_an_unsigned_release_has_no_bundle(tmp_path: Path) -> None:
    assert not (_released(tmp_path, None) / MODEL_BUNDLE).exists()


def _cited(root: Path, release: Path, signature: RegistryArtifact | None) -> ReleasedModel:
    """The registry entry of `release` (under `root`) as `stack release` writes it, citing `signature`."""
    return ReleasedModel(
        name="tiny",
        version="0.1.0",
        spec_version="1.44.0",
        git_sha="0" * 40,
        evidence=[{"run": "train-x", "sha256": "0" * 64}],
        license="MIT",
        card=(release / "MODEL_CARD.md").relative_to(root).as_posix(),
        signature=signature,
    )


def _bundle_cited(root: Path, release: Path) -> RegistryArtifact:
    bundle = release / MODEL_BUNDLE
    return RegistryArtifact(
        path=bundle.relative_to(root).as_posix(), sha256=sha256_file(bundle), bytes=bundle.stat().st_size
    )


def test_the_check_verifies_the_bundle_a_release_cites(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    release = _released(tmp_path, key)
    checker = Checker(tmp_path, load_spec_from(ROOT / "spec"), trust=[pub])
    checker.check_release_signature(_cited(tmp_path, release, _bundle_cited(tmp_path, release)))
    assert checker.violations == [] and checker.warnings == []
    (release / "MODEL_CARD.md").write_text("# tiny 0.1.0, now state of the art\n")
    checker.check_release_signature(_cited(tmp_path, release, _bundle_cited(tmp_path, release)))
    assert any("does not verify" in f.line() and "MODEL_CARD.md" in f.line() for f in checker.violations)


def test_the_check_names_an_unsigned_release_and_a_bundle_not_as_cited(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    key, pub = keys
    release = _released(tmp_path, key)
    checker = Checker(tmp_path, load_spec_from(ROOT / "spec"), trust=[pub])
    checker.check_release_signature(_cited(tmp_path, release, None))
    assert [f.rule for f in checker.warnings] == ["UNSIGNED"] and checker.violations == []
    cited = _bundle_cited(tmp_path, release).model_copy(update={"sha256": "0" * 64})
    checker.check_release_signature(_cited(tmp_path, release, cited))
    assert any("not the bundle it cites" in f.line() for f in checker.violations)


def test_the_stack_runs_without_the_signing_libraries_until_it_signs() -> None:
    """A machine that signs nothing (the GPU image) needs none of the signing extra: filing,
    releasing and checking import it only to sign or to verify."""
    code = (
        "import sys, contracts.evidence, stack.outputs.ledger, stack.release; "
        "loaded = {'securesystemslib', 'model_signing', 'in_toto_attestation'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def signed_release(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    """A scratch repository (as tests/test_release.py makes one) whose run was trained, filed and
    released with GATESTACK_SIGNING_KEY set: its record and its release are signed."""
    key, _ = keys
    root = tmp_path_factory.mktemp("signed-release") / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    clean = CodeInfo(git_sha=head(), git_dirty=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contracts.evidence, "collect_code", lambda _repo: clean)
        patch.setenv(SIGNING_KEY_ENV, str(key))
        run_dir = root / "run"
        argv = [*smoke_args(prepared(root.parent), run_dir), "--evidence-dir", str(root / "evidence/runs")]
        assert train(argv) == 0
        assert stack_main(release_argv(root, run_dir, "tiny", "0.1.0")) == 0
    return root


def test_a_signed_release_verifies_with_model_signing_and_the_check(
    signed_release: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pub = keys
    root, released = signed_release, signed_release / "evidence/models/tiny-0.1.0"
    entry = read_registry(root / REGISTRY_FILE).models[-1]
    assert entry.signature is not None and entry.signature.path == "evidence/models/tiny-0.1.0/model.sig"
    assert entry.signature.sha256 == sha256_file(released / MODEL_BUNDLE)
    done = model_signing_verify(released, pub)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "evidence/runs/run" / ATTESTATION_FILE).is_file()
    checker = Checker(root, load_spec_from(ROOT / "spec"), trust=[pub])
    history = Checker(REPO_ROOT, load_spec_from(ROOT / "spec"))
    monkeypatch.setattr(checker, "_known_commits", history._known_commits)  # the scratch repo has no git
    loaded = load_evidence(root / "evidence/runs/run" / EVIDENCE_FILE)
    checker.check_record(loaded, root, in_ledger=True)
    registry = read_registry(root / REGISTRY_FILE)
    checker.check_registry(registry.model_copy(update={"models": registry.models[-1:]}), {"run": loaded})
    assert [f.line() for f in checker.violations] == []
    assert not any(f.rule == "UNSIGNED" for f in checker.warnings)


def test_a_record_owes_the_signing_policy_from_the_spec_version_that_brought_it() -> None:
    """A record of 1.43.0 was made before spec/signing.yaml and cites no digest of it; one naming a
    spec version that has the policy and leaving its digest out is named."""
    spec = load_spec_from(ROOT / "spec")
    current = read_evidence(RECORDS / "current" / "eval" / EVIDENCE_FILE)
    unsigned = {name: ref for name, ref in current.spec.policies.items() if name != "signing"}
    before = current.model_copy(
        update={"spec": current.spec.model_copy(update={"version": "1.43.0", "policies": unsigned})}
    )
    found = RecordFindings()
    check_policies(before, spec, found)
    assert not any("signing" in v for v in found.violations), found.violations
    since = spec.policy_revisions["signing"][0].spec_version
    after = before.model_copy(update={"spec": before.spec.model_copy(update={"version": since})})
    found = RecordFindings()
    check_policies(after, spec, found)
    assert "carries no digest of policy signing" in found.violations


def test_check_integrity_exits_3_on_a_forged_signed_record(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    signed = copied(tmp_path, "current/eval", key)
    argv = ["--runs-only", "--run", str(signed), "--trust-key", str(pub)]
    assert main(argv) == 0
    edited(signed, _argv_edited)
    assert main(argv) == 3


def test_an_envelope_that_is_no_file_of_the_record_is_named(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The envelope is read as every file the check reads: a link out of the record is refused."""
    _, pub = keys
    record = copied(tmp_path, "current/eval", None)
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}\n")
    (record / ATTESTATION_FILE).symlink_to(outside)
    violations, _ = report_of(record, pub)
    assert any(ATTESTATION_FILE in line for line in violations), violations


def test_an_unsigned_release_is_named_with_what_it_cannot_prove() -> None:
    problem, required = unsigned_problem(SigningPolicy(), RELEASE_KIND)
    assert not required and "nothing proves its files are the ones released" in problem
    assert unsigned_problem(SigningPolicy(required=[RELEASE_KIND]), RELEASE_KIND)[1]


@pytest.fixture(scope="module")
def signed_sample(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    return copied(tmp_path_factory.mktemp("signed-sample"), "current/sample", keys[0])


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_of_a_signed_subject_changed_is_named(
    data: st.DataObject,
    signed_sample: Path,
    keys: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Whatever byte of the record or its result is changed, to whatever value, the signature names
    the file: a signed subject has no byte a forger may change."""
    target = tmp_path_factory.mktemp("flip") / "sample"
    shutil.copytree(signed_sample, target)
    name = data.draw(st.sampled_from([EVIDENCE_FILE, "sample.json"]))
    raw = bytearray((target / name).read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = (raw[at] + data.draw(st.integers(1, 255))) % 256
    (target / name).write_bytes(bytes(raw))
    record = read_evidence(signed_sample / EVIDENCE_FILE)  # the record as signed: the edit may not parse
    problems = signature_problems(target, record, trusting(SigningPolicy(), [keys[1]]))
    assert any(name in p and "no longer hashes" in p for p in problems), problems
