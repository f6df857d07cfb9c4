"""The command-line front door: every command has --help and bad input exits 2 with a message."""

import subprocess
import sys

import pytest

from changeagent.cli import COMMANDS, _available, build_parser, main


def test_every_command_module_exists():
    missing = [f"{' '.join(p)}: {m}" for p, (m, _, _) in COMMANDS.items() if not _available(m)]
    assert not missing, "COMMANDS names modules that do not exist: " + ", ".join(missing)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: changeagent")
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert {path[0] for path in COMMANDS} <= listed, out
    for group in {path[0] for path in COMMANDS if len(path) == 2}:  # `data`, `config`, `convert`
        with pytest.raises(SystemExit):
            main([group, "--help"])
        sub = capsys.readouterr().out
        for path, (_, _, help_text) in COMMANDS.items():
            if path[0] == group:
                assert path[1] in sub and help_text in " ".join(sub.split()), (path, sub)


def test_every_command_has_its_own_help(capsys):
    parser = build_parser()
    for path, (_, _, help_text) in COMMANDS.items():
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*path, "--help"])
        assert e.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: changeagent {' '.join(path)}"), (path, out[:200])
        assert help_text in " ".join(out.split()), path  # its description, not another command's
        assert "--help" in out and len(out.splitlines()) > 3, path


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
