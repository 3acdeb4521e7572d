"""``adaptok --help`` lists every command: LightningCLI's stages and the suite's own tools."""

from __future__ import annotations

import sys
import types

import pytest

from modules.cli import LIGHTNING_COMMANDS, SUITE_COMMANDS, SuiteCommand, main

ALL_COMMANDS = (*LIGHTNING_COMMANDS, *SUITE_COMMANDS)


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["adaptok", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def test_top_level_help_lists_the_suites_own_commands(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps the options to the terminal
    assert _run(monkeypatch, "--help") == 0
    text = capsys.readouterr().out
    description = " ".join(text.split("options:", 1)[0].split())
    assert all(name in description for name in ALL_COMMANDS), description
    epilog = text.split("other commands", 1)[1]
    for name in SUITE_COMMANDS:
        assert f"\n  {name} " in epilog, epilog
    assert "a video file -> tokens per block" in " ".join(epilog.split())
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("args", [(), ("tokenise", "clip.mp4")])
def test_no_or_an_unknown_command_names_every_command(monkeypatch, capsys, args) -> None:
    assert _run(monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("adaptok: error: "), err
    assert ("unknown command 'tokenise'" if args else "no command given") in err
    assert f"choose one of {', '.join(ALL_COMMANDS)}" in err


def test_suite_commands_dispatch_to_their_own_help(monkeypatch, capsys) -> None:
    for name in SUITE_COMMANDS:
        assert _run(monkeypatch, name, "--help") == 0
        assert f"usage: adaptok {name}" in capsys.readouterr().out


def test_one_table_lists_and_dispatches_the_suites_commands(monkeypatch, capsys) -> None:
    """A command added to SUITE_COMMANDS alone is both listed in --help and run."""
    module = types.ModuleType("fake_suite_command")
    module.main = lambda argv: 7 if argv == ["x", "--y"] else 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(SUITE_COMMANDS, "fake", SuiteCommand(module.__name__, "a fake command"))
    assert _run(monkeypatch, "fake", "x", "--y") == 7
    assert _run(monkeypatch, "--help") == 0
    assert "  fake" in capsys.readouterr().out.split("other commands", 1)[1]
