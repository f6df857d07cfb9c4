"""The command-line front door: every command has --help and bad input exits 2 with a message."""

import subprocess
import sys

import pytest

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


HEAVY = ("torch", "rasterio", "segmentation_models_pytorch", "timm", "torchmetrics", "pycocoevalcap",
         "albumentations", "wandb", "scipy", "transformers", "gradio", "mcp")
PROBE = """
import sys

import pytest
from changeagent.cli import COMMANDS, _available, main
heavy = {heavy!r}
for path, (module, _, _) in COMMANDS.items():
    if not _available(module):
        continue
    for argv in ([*path, "--help"], [*path, "--no-such-option"]):
        try:
            main(argv)
        except SystemExit:
            pass
        loaded = [m for m in heavy if m in sys.modules]
        if loaded:
            print("SLOW", " ".join(argv), loaded)
            raise SystemExit(1)
print("OK")
"""


def test_help_and_argument_errors_import_nothing_heavy():
    """`changeagent <cmd> --help` and argument errors answer before torch & co are imported (a fresh
    process per check would be slow; one process tries every command and stops at the first import)."""
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-2000:]


def test_overrides_may_stand_before_and_after_options(tmp_path, capsys):
    import json

    out = tmp_path / "c.json"
    assert main(["config", "show", "-c", "configs/demo.yaml", "run.seed=3", "--json", str(out), "run.name=x"]) == 0
    run = json.loads(out.read_text())["run"]
    assert run["seed"] == 3 and run["name"] == "x"
    with pytest.raises(SystemExit) as e:  # anything else left over is still an argument error
        main(["config", "show", "-c", "configs/demo.yaml", "--bogus"])
    assert e.value.code == 2
