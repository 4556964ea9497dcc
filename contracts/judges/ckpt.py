"""The judges of the checkpoint gates (spec/gates/ckpt.yaml): a checkpoint holds the whole state,
is written atomically and verified, and a resume repeats the steps it replaces.
"""

from __future__ import annotations

from contracts.judges.base import Judges, Measured, Thresholds, count, flag, has, items, number
from contracts.judges.integ import falsifiers_pass
from contracts.wording import first_few

judges = Judges()


@judges(
    "GATE-CKPT-003",
    checks={
        "resume": ("compared", "mismatched"),
        "falsifiers": ("falsifiers+",),
        "replay": ("replayed_steps", "bit_for_bit", "replay_mismatched", "max_loss_rel_diff"),
    },
)
def _resume_exact(m: Measured, t: Thresholds) -> list[str]:
    """At run time: every restored state equals the checkpoint's, and the replayed steps repeat the
    steps taken (bit for bit, or each loss within nondeterministic_loss_rtol when the run is not
    deterministic); in conformance: the falsifiers."""
    replay = ("replayed_steps", "bit_for_bit", "replay_mismatched", "max_loss_rel_diff")
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "compared", "mismatched"):
        compared, mismatched = items(m, "compared"), items(m, "mismatched")
        if not compared:
            problems.append("no restored state was compared with the checkpoint")
        if mismatched:
            problems.append(f"restored state differs from the checkpoint: {', '.join(map(str, mismatched))}")
    if has(m, *replay):
        if count(m, "replayed_steps") < 1:
            problems.append("no step was replayed")
        differ = items(m, "replay_mismatched")
        if differ:
            problems.append(f"the replayed steps differ from the steps taken: {', '.join(map(str, differ))}")
        gap, rtol = number(m, "max_loss_rel_diff"), t["nondeterministic_loss_rtol"]
        if not flag(m, "bit_for_bit") and not gap <= rtol:
            problems.append(
                f"a replayed loss differs from the step taken by {gap:.3g} (relative), above {rtol}"
            )
    return problems


@judges(
    "GATE-CKPT-001",
    checks={
        "complete": ("missing", "checkpoint"),
        # the model file read back after the save, against the model the run trains
        "weights": ("weights_compared", "weights_differing", "checkpoint"),
        # the optimizer file read back after the save, against the optimizer's live state
        "optimizer": ("optimizer_compared", "optimizer_differing", "checkpoint"),
        # each weights file read back has the mode a file created under the umask gets
        "modes": ("umask", "files_moded", "off_mode"),
    },
)
def _complete_checkpoint(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    if has(m, "umask", "files_moded", "off_mode") and (off := items(m, "off_mode")):
        problems.append(
            f"{len(off)} of the checkpoint's {count(m, 'files_moded')} weights file(s) are not the mode a "
            f"file created under umask {m['umask']} gets (contracts.file_modes): {first_few(off)}"
        )
    if has(m, "missing") and (missing := items(m, "missing")):
        problems.append(f"the checkpoint lacks {', '.join(map(str, missing))}")
    if has(m, "weights_compared", "weights_differing"):
        compared, differing = count(m, "weights_compared"), count(m, "weights_differing")
        if not compared:
            problems.append(
                f"no tensor of {m.get('checkpoint')}'s model file was compared with the model trained"
            )
        elif differing:
            problems.append(
                f"{differing} of the {compared} tensors of {m.get('checkpoint')}'s model file (first: "
                f"{m.get('first_differing')}) are not the model the run trained: a resume would continue "
                "another run"
            )
    # An optimizer that has not stepped holds no tensor: an empty state saved empty holds.
    if has(m, "optimizer_compared", "optimizer_differing") and (differing := count(m, "optimizer_differing")):
        problems.append(
            f"{differing} tensor(s) of {m.get('checkpoint')}'s optimizer file (first: "
            f"{m.get('first_optimizer_differing')}) are not the live optimizer's state, bit for bit and "
            "dtype for dtype: a resume would continue with other moments than the run's"
        )
    return problems


@judges(
    "GATE-CKPT-002",
    checks={
        "verified": ("files_verified", "checkpoint", "problem"),
        # a command given a run directory reads its newest valid checkpoint
        "newest": ("chosen_checkpoint", "newer_checkpoints", "newer_valid"),
        # every prune keeps the checkpoint the run's metrics log names its best
        "best": ("best_checkpoint", "kept_checkpoints"),
        # a prune leaves exactly the newest ckpt.keep_last checkpoints written and the best;
        # counted among those that verify, not set aside, and with the one resumed from
        "pruned": ("expected_checkpoints",),
    },
)
def _verified_checkpoint(m: Measured, t: Thresholds) -> list[str]:
    """The checkpoint read matches its manifest, file by file; and, chosen from a run directory, no
    checkpoint of the run with a later step loads."""
    problems = []
    if has(m, "files_verified", "problem"):
        if (problem := m.get("problem")) is not None:
            problems.append(f"refusing checkpoint: {problem}")
        elif count(m, "files_verified") < 1:
            problems.append("no file of the checkpoint was verified")
    if has(m, "newer_checkpoints", "newer_valid") and (newer := items(m, "newer_valid")):
        problems.append(
            f"{m.get('chosen_checkpoint')} was read from the run directory while its newer checkpoint(s) "
            f"{', '.join(map(str, newer))} load: a resume would repeat steps the run took, a command "
            "would read an older model than the run's"
        )
    best = m.get("best_checkpoint")
    if has(m, "best_checkpoint", "kept_checkpoints") and best is not None:
        kept = list(map(str, items(m, "kept_checkpoints")))
        if best not in kept:
            problems.append(
                f"the run's metrics log names {best} its best checkpoint (written right after its lowest "
                f"held-out loss), but a prune left only {', '.join(kept)}"
            )
    if has(m, "expected_checkpoints", "kept_checkpoints"):
        kept = sorted(map(str, items(m, "kept_checkpoints")))
        expected = sorted(map(str, items(m, "expected_checkpoints")))
        if kept != expected:
            problems.append(
                f"a prune left {', '.join(kept) or 'nothing'} that verify against their manifests, where the "
                f"run's metrics log says it keeps {', '.join(expected)} (the newest ckpt.keep_last written "
                "and not set aside, the best, and the checkpoint the run resumed from)"
            )
    return problems
