"""An output path that names a file where a folder is meant (or the reverse): `error:` and exit 2,
for every command, before any work (no traceback, nothing written)."""

import pytest

from changeagent.cli import main


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "taken.txt"
    f.write_text("not a folder\n")
    return f


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ("predict", "-k", "CK", "A.png", "B.png", "-o", "{file}"),
    ("predict", "-k", "CK", "--a-dir", "A", "--b-dir", "B", "-o", "{file}/sub"),
    ("index", "-k", "CK", "--a-dir", "A", "--b-dir", "B", "-o", "{file}"),
    ("eval", "-c", "configs/demo.yaml", "--checkpoint", "CK", "--out", "{file}"),
    ("data", "synth", "--format", "levir-mci", "--out", "{file}"),
    ("demo", "--out", "{file}"),
    ("convert", "change-agent", "X.pth", "--vocab", "v.json", "-o", "{file}"),
])
def test_output_folder_that_is_a_file(capsys, a_file, argv):
    code, err = run(capsys, *[a.format(file=a_file) for a in argv])
    assert code == 2
    assert err.startswith("error: --out") and "is a file" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ("model-info", "model=fast", "--json", "{dir}"),
    ("data", "vocab", "captions.json", "-o", "{dir}"),
    ("score-captions", "--hyp", "h.json", "--refs", "r.json", "--json", "{dir}"),
    ("search", "IDX", "a query", "--geojson", "{dir}"),
])
def test_output_file_that_is_a_folder(capsys, tmp_path, argv):
    code, err = run(capsys, *[a.format(dir=tmp_path) for a in argv])
    assert code == 2 and "is a folder; give a file name" in err


def test_train_run_folder_that_is_a_file(capsys, a_file):
    code, err = run(capsys, "train", "-c", "configs/demo.yaml", f"run.out_dir={a_file}")
    assert code == 2 and "run.out_dir" in err and "is a file" in err
