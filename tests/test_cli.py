"""The command-line front door: every command has --help and bad input exits 2 with a message."""

import subprocess
import sys

from changeagent.cli import COMMANDS, _available, build_parser, main


def test_top_level_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "changeagent" in out


def test_every_available_command_has_help():
    parser = build_parser()
    for path, (module, _, _) in COMMANDS.items():
        if not _available(module):
            continue
        try:
            parser.parse_args([*path, "--help"])
        except SystemExit as e:
            assert e.code == 0, path


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "changeagent", "--version"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "changeagent" in r.stdout
