"""What a user outside the repository relies on: shipped configs found from any working directory and
in a non-editable install, the licence, and a torch requirement that keeps an existing CUDA build."""

from fnmatch import fnmatch
from pathlib import Path

import tomllib

from changeagent.cli import main
from changeagent.config import config_dir

ROOT = Path(__file__).resolve().parent.parent


def test_configs_by_name_from_any_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("configs/levir_cd.yaml", "levir_cd.yaml", "levir_cd"):
        assert main(["config", "show", "-c", name, "--json", str(tmp_path / "c.json")]) == 0, name
    assert capsys.readouterr().out.count("- levir_cd") == 3  # data.datasets of each of the three
    assert main(["config", "show", "-c", "nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert "cannot read config nope.yaml: no such file" in err and "levir_mci" in err
    # a file of that name where the user is wins over the shipped one
    (tmp_path / "levir_cd.yaml").write_text("data: {datasets: [whu_cd]}\n")
    assert main(["config", "show", "-c", "levir_cd.yaml"]) == 0
    assert "whu_cd" in capsys.readouterr().out


def test_configs_ship_inside_the_package():
    assert config_dir() == ROOT / "changeagent" / "configs"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["changeagent"]
    shipped = [p.relative_to(ROOT / "changeagent").as_posix() for p in config_dir().rglob("*.yaml")]
    assert shipped and all(any(fnmatch(s, g) for g in globs) for s in shipped)
    assert (ROOT / "configs").resolve() == config_dir()  # the repository's configs/ is the same folder


def test_licence_and_torch_requirement():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    torch_reqs = [d for d in project["dependencies"] if d.startswith(("torch", "torchvision"))]
    assert torch_reqs and not any("==" in d for d in torch_reqs)  # no exact pin in the package
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==" in pins and "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_docs_reference_only_what_ships():
    """The docs stand alone: no sections of the project's internal specification, no sample folders
    outside the repository (`shared/`), no run-config key that does not exist (the old `train.lr`)."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for bad in (r"SPEC §", r"SPEC\.md", r"\bshared/", r"\btrain\.lr="):
            assert not re.search(bad, text), f"{page.name}: {bad}"
