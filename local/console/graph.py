"""A state machine drawn as SVG, with one execution's path on it, laid out here (no
JavaScript graph library, nothing to build).

Layout: each state's row is its longest distance from StartAt (edges that close a loop are
left out of that count). The main path, the states reached from StartAt through `Next` and
Choice rules, fills the left column; the rest, what only a Choice's `Default` or a `Catch`
leads to (the failure and compensation branch, by the convention that a Choice's rules name
the expected outcomes), takes the columns to its right, first free one in its row.

On an execution's path, states are marked by what happened: visited, retried (with the
number of attempts), failed (its last attempt failed), and the transitions taken are drawn
bold, a caught failure's in red.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from html import escape
from typing import Any

from local.console.workflows import Execution, edges_of

NODE_WIDTH, NODE_HEIGHT = 168, 34
COLUMN_GAP, ROW_GAP = 44, 20
MARGIN = 16
TIMES = "\u00d7"  # the multiplication sign: "3 attempts" is drawn as that sign and 3


@dataclass(frozen=True)
class Placed:
    name: str
    state_type: str
    row: int
    column: int
    main_path: bool

    @property
    def x(self) -> int:
        return MARGIN + self.column * (NODE_WIDTH + COLUMN_GAP)

    @property
    def y(self) -> int:
        return MARGIN + self.row * (NODE_HEIGHT + ROW_GAP)


def main_path(definition: dict[str, Any]) -> set[str]:
    """The states reached from StartAt through `Next` and Choice rules only."""
    states = definition.get("States", {})
    start = definition.get("StartAt")
    seen: set[str] = set()
    queue = deque([start] if start in states else [])
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        for target, kind, _ in edges_of(states[name]):
            if kind in ("next", "choice") and target in states:
                queue.append(target)
    return seen


def layout(definition: dict[str, Any]) -> list[Placed]:
    states: dict[str, Any] = definition.get("States", {})
    start = definition.get("StartAt")
    order = list(states)
    # Longest distance from StartAt, over the graph without the edges that close a loop.
    forward: dict[str, list[str]] = {name: [] for name in states}
    state_of_visit: dict[str, int] = {}  # 1: on the DFS stack, 2: done

    def visit(name: str) -> None:
        state_of_visit[name] = 1
        for target, _, _ in edges_of(states[name]):
            if target not in states:
                continue
            if state_of_visit.get(target) == 1:
                continue  # a loop back
            forward[name].append(target)
            if target not in state_of_visit:
                visit(target)
        state_of_visit[name] = 2

    roots = [start] if start in states else []
    for name in roots + order:
        if name not in state_of_visit:
            visit(name)
    rank = dict.fromkeys(states, 0)
    for name in _topological(forward, order):
        for target in forward[name]:
            rank[target] = max(rank[target], rank[name] + 1)
    on_main = main_path(definition)
    placed: list[Placed] = []
    taken: set[tuple[int, int]] = set()
    for name in sorted(states, key=lambda n: (n not in on_main, rank[n], order.index(n))):
        column = 0 if name in on_main else 1
        while (rank[name], column) in taken:
            column += 1
        taken.add((rank[name], column))
        placed.append(Placed(name, states[name].get("Type", "?"), rank[name], column,
                             name in on_main))  # fmt: skip
    return placed


def _topological(forward: dict[str, list[str]], order: list[str]) -> list[str]:
    incoming = dict.fromkeys(forward, 0)
    for targets in forward.values():
        for target in targets:
            incoming[target] += 1
    ready = deque(n for n in order if incoming[n] == 0)
    result = []
    while ready:
        name = ready.popleft()
        result.append(name)
        for target in forward[name]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return result


def svg(definition: dict[str, Any], run: Execution | None = None) -> str:
    """The drawing, as an inline <svg> element."""
    placed = {p.name: p for p in layout(definition)}
    states = definition.get("States", {})
    visits = {v.state: v for v in (run.visits if run else [])}
    attempts: dict[str, int] = {}
    for v in run.visits if run else []:
        attempts[v.state] = attempts.get(v.state, 0) + v.attempts
    taken = {(a, b): kind for a, b, kind in (run.taken if run else [])}
    width = MARGIN * 2 + (max((p.column for p in placed.values()), default=0) + 1) * (
        NODE_WIDTH + COLUMN_GAP
    )
    height = MARGIN * 2 + (max((p.row for p in placed.values()), default=0) + 1) * (
        NODE_HEIGHT + ROW_GAP
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="state machine">',
        "<defs>",
        *(
            f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
            f'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" class="arrow {k}"/></marker>'
            for k in ("plain", "taken", "caught")
        ),
        "</defs>",
    ]
    for name, state in states.items():
        for target, kind, label in edges_of(state):
            if target in placed:
                went = taken.get((name, target))
                parts.append(_edge(placed[name], placed[target], kind, label,
                                   went if went == kind else None))  # fmt: skip
    for node in placed.values():
        parts.append(_node(node, visits.get(node.name), attempts.get(node.name, 0)))
    parts.append("</svg>")
    return "\n".join(parts)


def _edge(source: Placed, target: Placed, kind: str, label: str, taken: str | None) -> str:
    x1, y1 = source.x + NODE_WIDTH / 2, source.y + NODE_HEIGHT
    x2, y2 = target.x + NODE_WIDTH / 2, target.y
    if target.row <= source.row:  # back up, or across in the same row: around the side
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        x2, y2 = target.x + NODE_WIDTH, target.y + NODE_HEIGHT / 2
        bend = NODE_WIDTH / 2 + 12
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 + bend},{y2} {x2},{y2}"
    elif target.column != source.column:
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        path = f"M{x1},{y1} C{x2},{y1} {x2},{y1} {x2},{y2}"
    elif target.row - source.row > 1:  # a skip down its own column: along its right side
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        x2, y2 = target.x + NODE_WIDTH, target.y + NODE_HEIGHT / 2
        path = f"M{x1},{y1} C{x1 + 30},{y1} {x2 + 30},{y2} {x2},{y2}"
    else:
        path = f"M{x1},{y1} L{x2},{y2}"
    marker = "caught" if taken == "catch" else "taken" if taken else "plain"
    classes = f"edge {kind}" + (f" taken {taken}" if taken else "")
    title = f"{source.name} → {target.name}: {kind}" + (f" ({label})" if label else "")
    return (
        f'<path class="{classes}" d="{path}" marker-end="url(#arrow-{marker})" '
        f'data-from="{escape(source.name)}" data-to="{escape(target.name)}">'
        f"<title>{escape(title)}</title></path>"
    )


def _node(node: Placed, visit: Any, attempts: int) -> str:
    classes = ["state", node.state_type.lower(), "main" if node.main_path else "branch"]
    if visit is not None:
        classes.append("visited")
        if visit.failed:
            classes.append("failed")
        if attempts > 1:
            classes.append("retried")
    badge = ""
    if attempts > 1:
        badge = (
            f'<text class="badge" x="{node.x + NODE_WIDTH - 6}" y="{node.y + 12}" '
            f'text-anchor="end">{TIMES}{attempts}</text>'
        )
    anchor = f"#state-{escape(node.name)}" if visit is not None else ""
    shape = (
        f'<rect x="{node.x}" y="{node.y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" '
        f'rx="{NODE_HEIGHT / 2 if node.state_type in ("Succeed", "Fail") else 6}"/>'
    )
    text = (
        f'<text x="{node.x + NODE_WIDTH / 2}" y="{node.y + NODE_HEIGHT / 2 + 4}" '
        f'text-anchor="middle">{escape(node.name)}</text>'
    )
    title = f"<title>{escape(node.name)} ({escape(node.state_type)})</title>"
    body = f"{title}{shape}{text}{badge}"
    if anchor:
        body = f'<a href="{anchor}">{body}</a>'
    return f'<g class="{" ".join(classes)}" data-state="{escape(node.name)}">{body}</g>'
