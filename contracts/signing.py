"""Signed records: an in-toto Statement in a DSSE envelope beside a filed `metadata.json`.

A record's hashes show that the files it cites are the files it hashed; they cannot show that the
record is the one its run filed: a forger who edits a record and its files together re-hashes both
(docs/concepts/integrity.md). What such a forger cannot recompute is a signature made when the
record was filed, by a key held by the machine or CI job that ran it, checked against a public key
the spec trusts (spec/signing.yaml, a policy under revision).

The key is a PEM private key file named by GATESTACK_SIGNING_KEY: ECDSA P-256 (or P-384, P-521),
the curves model-signing's key signer takes too, so one key signs a team's records and its releases
(stack.release). Without the variable, records are filed unsigned. A key inside
the repository is refused: a key committed beside the records it signs lets anyone who can read the
repository sign a forgery.

The envelope is written with the maintained libraries of the software supply chain, not by hand:
the Statement with `in-toto-attestation`, the DSSE envelope and its ECDSA signature with
`securesystemslib`. They are the `signing` extra, imported only when a key is configured or an
envelope is read, so a machine that signs nothing runs without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from contracts.errors import BadInput
from contracts.files import atomic_write_bytes, sha256_file
from contracts.reading import Unreadable, read_json
from contracts.spec import ANY_KIND, RELEASE_KIND, SigningPolicy, TrustedKey


class EvidenceRecord(Protocol):
    """What a signature reads of a filed record (contracts.evidence.EvidenceRecord), named here so
    that the ledger, which signs as it files, and the signatures do not import each other."""

    run: Any
    code: Any
    spec: Any
    gates: Any
    artifacts: Any


# The environment variable naming the signing key file (PEM, PKCS#8 or traditional EC form).
SIGNING_KEY_ENV = "GATESTACK_SIGNING_KEY"
# The envelope's file beside metadata.json; `.intoto.json` as in-toto tooling names attestations.
ATTESTATION_FILE = "metadata.intoto.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# What the predicate is: a gatestack evidence record's command, provenance and verdicts.
PREDICATE_TYPE = "https://gatestack.dev/evidence-record/v1"
# The subject naming the record itself; every artifact it cites is a subject by its path.
RECORD_SUBJECT = "metadata.json"
EXTRA_HINT = "install the signing extra: pip install -e '.[signing]'"


def repository_of(path: Path) -> Path | None:
    """The git work tree `path` lies in (the nearest directory above it holding `.git`), or None."""
    for parent in [path, *path.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def configured_key(*places: Path) -> Path | None:
    """The signing key GATESTACK_SIGNING_KEY names, resolved; None when none is configured.

    Refused (BadInput) when it is not a file, when it lies inside the repository of any of
    `places` (the code's repository, the ledger the record is filed in): a key there is readable by
    everyone who can read the records it would vouch for; and when it is no ECDSA key or the
    signing libraries are missing. Commands ask before their work (stack.outputs.ledger.check), so
    a key that cannot sign costs nothing.
    """
    named = os.environ.get(SIGNING_KEY_ENV, "").strip()
    if not named:
        return None
    key = Path(named).expanduser().resolve()
    if not key.is_file():
        raise BadInput(
            f"{SIGNING_KEY_ENV}={named} is not a key file; name a PEM private key file or unset it"
        )
    for place in places:
        repo = repository_of(Path(place).resolve())
        if repo is not None and key.is_relative_to(repo):
            raise BadInput(
                f"{SIGNING_KEY_ENV}={named} lies inside the repository {repo}; keep the signing key outside "
                "it (a CI secret, a hardware key, or a file such as ~/.config/gatestack/signing-key.pem)"
            )
    _crypto_signer(key)
    if importlib.util.find_spec("in_toto_attestation") is None:  # the Statement's writer
        raise BadInput(f"signing with {key} needs in_toto_attestation: {EXTRA_HINT}")
    return key


# How to make a key both signers take (the public half is what spec/signing.yaml trusts).
KEYGEN = "openssl ecparam -name prime256v1 -genkey -noout -out KEY; openssl ec -in KEY -pubout -out KEY.pub"


def _crypto_signer(key: Path) -> Any:
    """A securesystemslib signer of the PEM private key file `key` (one line refusing anything else)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from securesystemslib.signer import CryptoSigner
    except ImportError as exc:
        raise BadInput(f"signing with {key} needs {exc.name}: {EXTRA_HINT}") from None
    try:
        private = load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise BadInput(
            f"{key} is not an unencrypted PEM private key ({exc}); make one with: {KEYGEN}"
        ) from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise BadInput(f"{key} is not an ECDSA key; make an ECDSA P-256 key with: {KEYGEN}")
    return CryptoSigner(private)


def record_statement(record_dir: Path, record: EvidenceRecord) -> dict[str, Any]:
    """The in-toto Statement of the record filed in `record_dir`: its subjects are metadata.json
    and every artifact the record cites (by sha256), its predicate the command, the code commit,
    the spec version and the verdicts. The checkpoint and data hashes the record states are signed
    through metadata.json's own digest."""
    from google.protobuf import json_format
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    subjects = [
        ResourceDescriptor(name=RECORD_SUBJECT, digest={"sha256": sha256_file(record_dir / RECORD_SUBJECT)})
    ]
    subjects += [ResourceDescriptor(name=art.path, digest={"sha256": art.sha256}) for art in record.artifacts]
    predicate = {
        "run": record.run.id,
        "kind": record.run.kind,
        "status": str(record.run.status),
        "command": record.run.argv,
        "code": {"commit": record.code.git_sha, "dirty": record.code.git_dirty},
        "spec_version": record.spec.version,
        "verdicts": {gate.id: str(gate.verdict) for gate in record.gates},
    }
    statement = Statement([s.pb for s in subjects], PREDICATE_TYPE, predicate)
    statement.validate()
    return json_format.MessageToDict(statement.pb)


def sign_record(record_dir: Path, record: EvidenceRecord, key: Path) -> Path:
    """Sign the record filed in `record_dir` with `key`; writes and returns its ATTESTATION_FILE."""
    from securesystemslib.dsse import Envelope

    signer = _crypto_signer(key)
    payload = json.dumps(record_statement(record_dir, record), sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(signer)
    path = record_dir / ATTESTATION_FILE
    atomic_write_bytes(path, (json.dumps(envelope.to_dict(), indent=2) + "\n").encode())
    return path


def trusted_keys(policy: SigningPolicy, kind: str) -> list[Any]:
    """The securesystemslib keys `policy` trusts to sign what is of `kind` (a run kind or RELEASE_KIND)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    return [
        SSlibKey.from_crypto(load_pem_public_key(trusted.public_key.encode()))
        for trusted in policy.trusted_keys
        if kind in trusted.kinds or ANY_KIND in trusted.kinds
    ]


def trusting(policy: SigningPolicy, public_keys: Sequence[Path]) -> SigningPolicy:
    """`policy` with the PEM public key files `public_keys` trusted for every kind besides: keys a
    person checking the ledger holds outside the repository (check_integrity --trust-key), which a
    forger who rewrote spec/signing.yaml with the repository could not have replaced."""
    extra = []
    for path in public_keys:
        try:
            text = Path(path).read_text(encoding="utf-8")
            extra.append(TrustedKey(name=str(path), public_key=text, kinds=[ANY_KIND]))
        except (OSError, UnicodeDecodeError, ValueError):
            raise BadInput(
                f"{path} is not a PEM public key file; pass the public half (KEY.pub of: {KEYGEN})"
            ) from None
    return SigningPolicy(trusted_keys=[*policy.trusted_keys, *extra], required=policy.required)


def requires_signature(policy: SigningPolicy, kind: str) -> bool:
    """Whether `policy` requires what is of `kind` to be signed by a key it trusts."""
    return kind in policy.required or ANY_KIND in policy.required


# What an unsigned record, or an unsigned release, cannot prove (the warning the check gives).
UNPROVABLE = {
    "record": "nothing proves it is the record its run filed (a record and its files edited together "
    "and re-hashed, its argv, its log rewritten consistently, cannot be told from the original)",
    RELEASE_KIND: "nothing proves its files are the ones released (weights swapped with the hashes the "
    "registry and its record cite cannot be told from the original)",
}


def unsigned_problem(policy: SigningPolicy, kind: str) -> tuple[str, bool]:
    """What the check says of an unsigned record of `kind` (or release, RELEASE_KIND), and whether it
    is a violation (the policy requires a signature) or a warning naming what it cannot prove."""
    if requires_signature(policy, kind):
        what = "releases" if kind == RELEASE_KIND else f"run kind {kind!r}"
        return f"is unsigned, and spec/signing.yaml requires {what} to be signed by a trusted key", True
    limit = UNPROVABLE[RELEASE_KIND if kind == RELEASE_KIND else "record"]
    return f"is unsigned: {limit}; sign with GATESTACK_SIGNING_KEY", False


def signature_problems(record_dir: Path, record: EvidenceRecord, policy: SigningPolicy) -> list[str]:
    """What is wrong with the signature of the record in `record_dir` (none: it is signed, by a key
    `policy` trusts for its run kind, over exactly the files that are there now).

    The envelope must verify against a trusted key; its Statement must name this record; and every
    subject must still hash as it did when signed, with metadata.json and each artifact the record
    cites among them: an edit re-hashed into the record changes metadata.json's digest, which the
    forger cannot sign again.
    """
    try:
        from securesystemslib.dsse import Envelope
        from securesystemslib.exceptions import VerificationError
    except ImportError as exc:
        return [f"carries {ATTESTATION_FILE} but {exc.name} is not installed to verify it: {EXTRA_HINT}"]

    kind = record.run.kind
    try:  # read as every file the check reads: a regular file inside the record, capped, JSON
        envelope = Envelope.from_dict(read_json(record_dir / ATTESTATION_FILE, record_dir))
    except Unreadable as exc:
        return [f"{ATTESTATION_FILE} {exc.problem}"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{ATTESTATION_FILE} is not a DSSE envelope ({exc})"]
    keys = trusted_keys(policy, kind)
    if not keys:
        return [
            f"is signed, but spec/signing.yaml trusts no key for run kind {kind!r}: "
            "the signature proves nothing"
        ]
    try:
        envelope.verify(keys, 1)
    except (VerificationError, ValueError):
        return [
            f"{ATTESTATION_FILE}'s signature does not verify against any key spec/signing.yaml "
            f"trusts for {kind!r}"
        ]
    if envelope.payload_type != PAYLOAD_TYPE:
        return [f"{ATTESTATION_FILE} signs a {envelope.payload_type!r}, not an in-toto Statement"]
    try:
        statement = json.loads(envelope.payload)
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        signed_run = statement["predicate"]["run"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{ATTESTATION_FILE} signs no Statement of a record ({exc})"]
    problems = []
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        problems.append(f"{ATTESTATION_FILE} signs no {PREDICATE_TYPE} Statement")
    if signed_run != record.run.id:
        problems.append(f"{ATTESTATION_FILE} was signed for run {signed_run!r}, not {record.run.id!r}")
    for name in [RECORD_SUBJECT, *(art.path for art in record.artifacts)]:
        if name not in subjects:
            problems.append(f"{name} is not among the subjects {ATTESTATION_FILE} signed")
    for name, digest in sorted(subjects.items()):
        path = record_dir / name
        if not path.resolve().is_relative_to(record_dir.resolve()) or not path.is_file():
            problems.append(f"signed subject {name} is not in the record's directory")
        elif sha256_file(path) != digest:
            problems.append(
                f"{name} no longer hashes to what {ATTESTATION_FILE} signed (sha256 {digest[:12]}…)"
            )
    return problems


# A release's model-signing bundle, in its directory: the name `model_signing sign` gives it.
MODEL_BUNDLE = "model.sig"


def _model_hashing() -> Any:
    """model-signing's hashing of a release directory: every file but the bundle itself (and git's
    files, as `model_signing verify` leaves them out by default)."""
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[MODEL_BUNDLE], ignore_git_paths=True)


def sign_model(directory: Path, key: Path) -> Path:
    """Sign every file of release `directory` with `key` as a Sigstore bundle (model-signing's
    bring-your-own-key signer), written as directory/MODEL_BUNDLE; a user verifies it with
    `model_signing verify key DIRECTORY --signature DIRECTORY/model.sig --public_key KEY.pub`."""
    _crypto_signer(key)  # refuses, in one line, a key that is no ECDSA PEM key
    try:
        from model_signing import signing
    except ImportError as exc:
        raise BadInput(f"signing a release with {key} needs {exc.name}: {EXTRA_HINT}") from None
    bundle = Path(directory) / MODEL_BUNDLE
    signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(_model_hashing()).sign(
        directory, bundle
    )
    return bundle


def model_problems(directory: Path, policy: SigningPolicy) -> list[str]:
    """What is wrong with release `directory`'s bundle (none: model-signing verifies it against a key
    `policy` trusts for releases, over exactly the files there now)."""
    import tempfile

    try:
        from model_signing import verifying
    except ImportError as exc:
        return [f"carries {MODEL_BUNDLE} but {exc.name} is not installed to verify it: {EXTRA_HINT}"]
    trusted = [key for key in policy.trusted_keys if RELEASE_KIND in key.kinds or ANY_KIND in key.kinds]
    if not trusted:
        return [
            f"is signed, but spec/signing.yaml trusts no key for {RELEASE_KIND!r}: "
            "the signature proves nothing"
        ]
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, key in enumerate(trusted):
            public = Path(scratch) / f"key{n}.pub"
            public.write_text(key.public_key, encoding="utf-8")
            try:
                verifying.Config().use_elliptic_key_verifier(public_key=public).set_hashing_config(
                    _model_hashing()
                ).verify(directory, Path(directory) / MODEL_BUNDLE)
                return []
            except Exception as exc:  # model-signing raises ValueError and its libraries' own errors
                failures.append(" ".join(str(exc).split())[:200])
    why = "; ".join(dict.fromkeys(failures))
    return [f"{MODEL_BUNDLE} does not verify against any key trusted for releases: {why}"]
