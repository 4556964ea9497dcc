"""The options matrix as the last filed record measured it: the table docs/model.md includes.

`docs/reference/options-matrix.md` is not a page of its own: docs/model.md ("Every option, every
command") pulls it in with a snippet include, so its links are relative to docs/. The verdict of
every cell is the judge's (`contracts.judges.arch.cell_verdicts` over the record's measured
values), never recomputed here; a record made before the 1.7.0 matrix holds no commands and is
named as such rather than shown.
"""

from __future__ import annotations

from collections import Counter

from contracts.judges import Malformed
from contracts.judges.arch import CellVerdict, cell_verdicts, paths_of
from contracts.judges.arch import rows as matrix_rows
from tools.site.formatting import BANNER, code, run_path, short_sha, table, text
from tools.site.ledger import Ledger, record_of

KIND = "options-matrix"
GATE = "GATE-ARCH-013"
PAGE = "options-matrix.md"
FILE_IT = (
    "`stack options-matrix --data DATA_DIR --out DIR --evidence-dir evidence/runs`, then "
    "`python tools/render_site.py`"
)


def _shown(verdict: CellVerdict, reasons: dict[str, int]) -> str:
    """One cell: pass, a numbered refusal, FAIL or MISSING with its problem."""
    if verdict.verdict == "pass":
        return "pass"
    if verdict.verdict == "refused":
        return f"refused ({reasons.setdefault(verdict.note, len(reasons) + 1)})"
    return f"**{verdict.verdict.upper()}**: {text(verdict.note)}"


def options_matrix_snippet(ledger: Ledger) -> str:
    """The newest options-matrix record's cells as a commands × models table, refusals numbered."""
    out = [BANNER]
    latest = next((e for e in ledger.runs if record_of(e).run.kind == KIND), None)
    result = None if latest is None else next((g for g in record_of(latest).gates if g.id == GATE), None)
    if latest is None or result is None or not isinstance(result.measured, dict):
        out.append(f"No options-matrix record is filed yet: {FILE_IT}.\n")
        return "\n".join(out)
    record = record_of(latest)
    measured = result.measured
    try:
        verdicts = cell_verdicts(measured)
    except Malformed:
        out.append(
            f"The newest options-matrix record, {code(record.run.id)}, predates the matrix of spec 1.7.0 "
            f"(options alone, in pairs and together × every command); file a new one: {FILE_IT}.\n"
        )
        return "\n".join(out)
    models = [name for name, _ in matrix_rows([str(o) for o in measured["options"]], paths_of(measured))]
    commands = [str(c["name"]) for c in measured["commands"]]
    reasons: dict[str, int] = {}
    rows = [[code(c), *(_shown(verdicts[(m, c)], reasons) for m in models)] for c in commands]
    counted = Counter(v.verdict for v in verdicts.values())
    tally = ", ".join(f"{n} {v}" for v, n in sorted(counted.items()))
    out.append(
        f"Record [{code(record.run.id)}](reference/{run_path(record.run.id)}) of "
        f"{record.run.started:%Y-%m-%d}, code {short_sha(record.code.git_sha)}, spec {record.spec.version}: "
        f"GATE-ARCH-013 {result.verdict.value}; {len(verdicts)} cells: {tally}.\n"
    )
    out += table(["command", *(code(m) for m in models)], rows)
    if reasons:
        out.append("\nRefusals, each declared in `spec/options_matrix.yaml` with its reason:\n")
        out += [f"{n}. {text(reason)}" for reason, n in reasons.items()]
    return "\n".join(out) + "\n"
