"""The import graph keeps the layering of docs/architecture.md: data flows one way, foundations import no feature.

Every module under bot/ is read with `ast` (never imported). Every import statement counts, wherever it is:
module level, inside functions (a lazy import is still a dependency) and under `if TYPE_CHECKING:` (a type-only
import still ties the two packages together: a type moved or renamed breaks the importer, and a cycle of
type-only imports is the start of a real one). A package is `bot.<name>`; a top-level module (`bot/config.py`) is a
package of its own.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[2] / "bot"

# The bottom of the stack: each imports only other foundations (and `bot` itself, for __version__).
FOUNDATIONS = {
    "bot.clearml",  # the REST client: handed a counter, it imports no metrics and no engine
    "bot.config",  # settings, schedules and digest settings included
    "bot.durations",
    "bot.errors",
    "bot.heap",
    "bot.mrkdwn",  # escaping of data for Slack's mrkdwn
    "bot.redact",
    "bot.store",  # connections, transactions and table creation for every table
    "bot.targets",  # where a message goes (channel or dm:)
    "bot.yamlload",  # YAML with line numbers (playbooks, scenarios)
}

# Module-level edges (importer, imported) the rules let through for now, each with why and until when: none today.
# Add one only for work in flight that removes it; `test_exceptions_are_still_needed` fails once an edge is gone,
# so the list only shrinks.
TEMPORARY_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(BOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(BOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The modules a `from ... import ...` reaches: `from bot import metrics` is bot.metrics, `from bot.x import f`
    is bot.x."""
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        out.append(sub if sub in MODULES else module)
    return out


def module_imports() -> dict[str, set[str]]:
    """Module -> the bot modules it imports (anywhere in its text)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets.update(_resolve(name, path.name == "__init__.py", node))
        graph[name] = {t for t in targets if t.startswith("bot.") and t != name}
    return graph


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


GRAPH = module_imports()


def _allowed(importer: str, imported: str) -> bool:
    return (importer, imported) in TEMPORARY_EXCEPTIONS


def package_edges() -> dict[str, dict[str, list[str]]]:
    """Package -> imported package -> the module edges behind it (`importer -> imported`)."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for importer, targets in GRAPH.items():
        for imported in sorted(targets):
            a, b = package_of(importer), package_of(imported)
            if a != b and not _allowed(importer, imported):
                edges[a][b].append(f"{importer} -> {imported}")
    return edges


def _cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted({package_of(m) for m in GRAPH}):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reads_every_module() -> None:
    # the guard is only as good as its reading: a rename of bot/ or a parse that saw nothing would pass vacuously
    assert "bot.engine.runner" in GRAPH and "bot.slack.app" in GRAPH
    assert "bot.engine.findings" in GRAPH["bot.engine.runner"]
    assert sum(len(t) for t in GRAPH.values()) > 300


def test_no_import_cycle_between_packages() -> None:
    edges = package_edges()
    cycles = _cycles(edges)
    detail = []
    for component in cycles:
        members = set(component)
        for a in component:
            for b, why in sorted(edges[a].items()):
                if b in members:
                    detail.append(f"{a} -> {b}: {', '.join(why[:3])}{' ...' if len(why) > 3 else ''}")
    assert not cycles, "import cycles between packages:\n" + "\n".join(detail)


@pytest.mark.parametrize("foundation", sorted(FOUNDATIONS))
def test_foundations_import_nothing_above_them(foundation: str) -> None:
    upward = [
        f"{importer} -> {imported}"
        for importer, targets in GRAPH.items()
        if package_of(importer) == foundation
        for imported in sorted(targets)
        if package_of(imported) not in FOUNDATIONS and not _allowed(importer, imported)
    ]
    assert not upward, f"{foundation} imports a feature:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", ["bot.engine", "bot.checks"])
def test_engine_and_checks_import_nothing_from_slack(package: str) -> None:
    found = [
        f"{importer} -> {imported}"
        for importer, targets in GRAPH.items()
        if package_of(importer) == package
        for imported in sorted(targets)
        if package_of(imported) == "bot.slack" and not _allowed(importer, imported)
    ]
    assert not found, "\n".join(found)


def test_message_builders_call_no_clearml_client() -> None:
    # the Block Kit builders (bot/slack/messages/ and each domain's messages.py, help.py) are pure: data in,
    # messages out
    builders = [m for m in GRAPH if m.startswith("bot.slack.messages") or (m.startswith("bot.slack.")
                and m.rsplit(".", 1)[1] in ("messages", "help"))]
    assert {"bot.slack.incidents.messages", "bot.slack.actions.messages", "bot.slack.home.messages",
            "bot.slack.commands.messages", "bot.slack.messages.report"} <= set(builders)
    found = [
        f"{importer} -> {imported}"
        for importer in builders
        for imported in sorted(GRAPH[importer])
        if imported == "bot.clearml.client" and not _allowed(importer, imported)
    ]
    assert not found, "\n".join(found)


def test_simulator_shares_no_code_with_the_client() -> None:
    # a bug on one side must not hide a bug on the other: neither imports the other
    found = [
        f"{importer} -> {imported}"
        for importer, targets in GRAPH.items()
        for imported in sorted(targets)
        if {package_of(importer), package_of(imported)} == {"bot.sim", "bot.clearml"}
    ]
    assert not found, "\n".join(found)


def test_exceptions_are_still_needed() -> None:
    stale = [f"{a} -> {b}" for a, b in TEMPORARY_EXCEPTIONS if b not in GRAPH.get(a, set())]
    assert not stale, "remove these from TEMPORARY_EXCEPTIONS, the import is gone:\n" + "\n".join(stale)


def test_the_guard_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    # the reading itself: an import inside a function and one under TYPE_CHECKING both count
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bot.slack.app import create_app\n"
        "def f():\n    from bot.engine import runner\n    import bot.metrics\n"
    )
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve("bot.checks.agents", False, node))
    assert {"bot.slack.app", "bot.engine.runner", "bot.metrics"} <= found


_SQL = re.compile(
    r"\b(SELECT\s+[\w*,\s.()]+?\s+FROM\s+\w+|INSERT\s+(OR\s+\w+\s+)?INTO\s+\w+|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b",
    re.I,
)


def test_the_slack_side_writes_no_sql_but_its_outbox() -> None:
    # a table's queries live with the module that owns it (store/, actions/runs.py, incidents/, the outbox):
    # listeners, renderers and the Home read through those, never with their own SQL
    found = [
        str(path.relative_to(BOT.parent))
        for path in sorted((BOT / "slack").rglob("*.py"))
        if path != BOT / "slack" / "delivery" / "queue.py" and _SQL.search(path.read_text())
    ]
    assert not found, found
    assert _SQL.search((BOT / "slack" / "delivery" / "queue.py").read_text())  # the pattern does find SQL
