"""The site's family-tree page: every model of the ledger made from another, drawn as a tree.

    pretrain → sft → dpo → LoRA → merge → export → import → ...

Each family is a tree of records (tools/integrity/lineage.py: `families`): a root (a model trained from
scratch, or a parent whose record is not in the ledger) and the records made from it, each drawn
under the parent it names first, with the parent's role (init, reference, teacher, source). The
tree is drawn as an SVG (one box per record, its kind and run id) and listed below it with links
to the run pages; a link that tools/check_integrity.py finds broken is marked on both.
"""

from __future__ import annotations

from html import escape

from tools.integrity.lineage import Node, families, lineage_problems
from tools.site.formatting import BANNER, badge, code, text
from tools.site.ledger import Ledger, record_of
from tools.site.runs import run_link

PAGE = "lineage.md"
DIR = "lineage"
# A family is drawn top down: one row per generation, one column per line of descent.
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 200, 40, 24, 34, 8


def _layout(root: Node) -> list[tuple[Node, int, int, Node | None, str]]:
    """(node, column, row, parent, role) in drawing order: rows by depth, columns by leaf order."""
    placed: list[tuple[Node, int, int, Node | None, str]] = []
    next_column = 0

    def visit(node: Node, depth: int, parent: Node | None, role: str) -> int:
        nonlocal next_column
        index = len(placed)
        placed.append((node, 0, depth, parent, role))
        columns = [visit(child, depth + 1, node, child_role) for child_role, child in node.children]
        column = columns[0] if columns else next_column
        if not columns:
            next_column += 1
        placed[index] = (node, column, depth, parent, role)
        return column

    visit(root, 0, None, "")
    return placed


def _kind(node: Node) -> str:
    """What made the model: the record's run kind, with LoRA named (a LoRA run is an sft or finetune)."""
    if node.record is None:
        return "not in the ledger"
    config = node.record.config
    trained_lora = bool(config.get("lora")) and "train" in config  # a run's config, not a merge's
    return node.record.run.kind + (" (LoRA)" if trained_lora else "")


def _label(node: Node) -> tuple[str, str]:
    return _kind(node), node.run_id if len(node.run_id) <= 28 else node.run_id[:27] + "…"


def family_svg(root: Node, broken: set[str]) -> str:
    """One family as an SVG, top down: boxes joined parent to child, a broken link dashed and red."""
    placed = _layout(root)
    where = {id(node): (col, row) for node, col, row, _, _ in placed}
    width = (max(col for _, col, _, _, _ in placed) + 1) * (BOX_W + GAP_X) - GAP_X + 2 * PAD
    height = (max(row for _, _, row, _, _ in placed) + 1) * (BOX_H + GAP_Y) - GAP_Y + 2 * PAD

    def corner(col: int, row: int) -> tuple[int, int]:
        return PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    ]
    for node, col, row, parent, role in placed:
        if parent is None:
            continue
        (px, py), (x, y) = corner(*where[id(parent)]), corner(col, row)
        bad = node.run_id in broken
        style = 'stroke="#c62828" stroke-dasharray="4 3"' if bad else 'stroke="#5c6bc0"'
        x1, y1, x2 = px + BOX_W // 2, py + BOX_H, x + BOX_W // 2
        bend = f"C{x1},{y1 + GAP_Y // 2} {x2},{y - GAP_Y // 2} {x2},{y}"
        parts.append(f'<path d="M{x1},{y1} {bend}" fill="none" {style}/>')
        parts.append(f'<text x="{x2 + 6}" y="{y - GAP_Y // 2 + 4}" fill="#555">{escape(role)}</text>')
    for node, col, row, _, _ in placed:
        x, y = corner(col, row)
        kind, run = _label(node)
        fill = "#eeeeee" if node.record is None else "#e8eaf6"
        parts.append(
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{fill}" stroke="#3949ab"/>'
        )
        parts.append(f'<text x="{x + 8}" y="{y + 16}" font-weight="bold">{escape(kind)}</text>')
        parts.append(f'<text x="{x + 8}" y="{y + 31}">{escape(run)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _tree_lines(node: Node, depth: int, broken: dict[str, str], role: str = "") -> list[str]:
    """The family as a nested Markdown list: each record linked, with its role and any broken link."""
    indent = "    " * depth
    what = _kind(node)
    name = code(node.run_id) if node.record is None else run_link(PAGE, node.run_id)
    line = f"{indent}- {f'{text(role)} → ' if role else ''}{name} ({text(what)})"
    if node.run_id in broken:
        line += f" {badge('broken link', 's-bad')} {text(broken[node.run_id])}"
    lines = [line]
    for child_role, child in node.children:
        lines += _tree_lines(child, depth + 1, broken, child_role)
    return lines


def lineage_pages(ledger: Ledger) -> dict[str, str]:
    """lineage.md and one SVG per family under lineage/ (paths relative to docs/reference/)."""
    records = {run_id: record_of(loaded) for run_id, loaded in ledger.by_id.items()}
    broken: dict[str, str] = {}
    for run_id, problem in lineage_problems(records):
        broken.setdefault(run_id, problem)
    out = [
        BANNER,
        "# Model families\n",
        "Every model the ledger holds that was made from another (fine-tuned, preferred, adapted, "
        "merged, cut, quantised, exported, imported) names its parents in its record: the parent's "
        "record id and the sha256 of the weights it read. `tools/check_integrity.py` checks each link "
        "(the parent is in the ledger and vouches for those weights); a broken one is drawn dashed "
        "and red. How to read and extend a family: [the life of a model](../life-of-a-model.md).\n",
    ]
    pages: dict[str, str] = {}
    roots = families(records)
    if not roots:
        out.append("No record in the ledger names a parent model yet.")
    for root in roots:
        kind, _ = _label(root)
        out.append(f"## {text(root.run_id)} ({text(kind)})\n")
        pages[f"{DIR}/{root.run_id}.svg"] = family_svg(root, set(broken))
        out.append(f"![the family of {text(root.run_id)}]({DIR}/{root.run_id}.svg)\n")
        out += _tree_lines(root, 0, broken)
        out.append("")
    pages[PAGE] = "\n".join(out) + "\n"
    return pages
