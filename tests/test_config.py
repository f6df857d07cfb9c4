"""Config loading: YAML + dotted overrides, `model=NAME` selection."""

import pytest

from changeagent.config import load_config, to_dict
from changeagent.errors import ChangeAgentError


def test_overrides_are_yaml_typed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.001\n  epochs: 3\n")
    cfg = load_config(p, ["train.lr=3e-4", "train.epochs=5", "data.levir_mci.root=/x", "run.name=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 5
    assert cfg.data.levir_mci.root == "/x"
    assert to_dict(cfg)["run"]["name"] is None


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ChangeAgentError, match="key=value"):
        load_config(None, ["nonsense"])
    with pytest.raises(ChangeAgentError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ChangeAgentError, match="not found"):
        load_config(None, ["model=no_such_model"])
