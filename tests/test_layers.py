"""The codebase's shape: rooms that import only downwards, no cycles, no borrowed private names.

The rule and the graph (function-level imports included) are in tests/import_graph.py;
docs/architecture.md states the rule in words. The torch-free rule for read-only commands is tested
in tests/test_cli.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.import_graph import (
    ROOMS,
    cycles,
    import_graph,
    private_names_taken,
    problems,
    room_of,
    upward_imports,
)


def test_no_import_cycles_not_even_through_function_level_imports():
    assert cycles(import_graph()) == []


def test_every_import_runs_down_the_rooms():
    assert [f"{e.importer}:{e.line} -> {e.target}" for e in upward_imports(import_graph())] == []


def test_no_module_takes_another_modules_private_names():
    assert [
        f"{e.importer}:{e.line} takes {e.target}.{e.name}"
        for e in private_names_taken(import_graph())
    ] == []


def test_the_checker_sees_a_cycle_an_upward_import_and_a_private_name(tmp_path):
    """The rule can fail: a planted function-level cycle, a foundation module reaching up, a
    private import."""
    (tmp_path / "daemon" / "chat").mkdir(parents=True)
    (tmp_path / "cli").mkdir()
    for package in ("daemon", "daemon/chat", "cli"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "daemon" / "home.py").write_text(
        "def f():\n    from daemon.chat.render import g\n"
    )
    (tmp_path / "daemon" / "chat" / "render.py").write_text(
        "from daemon.home import f\n\ndef g():\n    pass\n"
    )
    (tmp_path / "cli" / "app.py").write_text("from daemon.chat.render import _private\n")
    found = problems(tmp_path)
    assert any(p.startswith("cycle: daemon.chat.render ⇄ daemon.home") for p in found), found
    assert any(p.startswith("upward: daemon.home:2 imports daemon.chat.render") for p in found), (
        found
    )
    assert "private: cli.app:1 takes daemon.chat.render._private" in found


def test_every_module_has_a_room_and_the_foundation_stays_small():
    graph = import_graph()
    for module in graph:
        room_of(module)  # raises for a module outside every room
    foundation = [
        m for m in graph if m.startswith("daemon.") and room_of(m) == ROOMS.index("daemon")
    ]
    assert len(foundation) <= 12, foundation


def test_module_names_do_not_repeat_across_packages():
    """`evolution.py` in three packages made every stack trace and search ambiguous."""
    root = Path(__file__).resolve().parents[1]
    names = Counter(
        p.stem
        for package in ("daemon", "cli")
        for p in (root / package).rglob("*.py")
        if p.stem != "__init__"
    )
    assert [name for name, count in names.items() if count > 1] == []
