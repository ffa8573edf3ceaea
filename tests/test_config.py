"""Config validation: the shipped configs pass, and a bad value fails naming its key."""

from __future__ import annotations

import copy

import pytest

from uvlm.config import REPO_ROOT, ConfigError, load_config, validate_config


@pytest.mark.parametrize("name", ["config.yaml", "ct_rate.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO_ROOT / "config" / name)
    assert set(cfg["run"]) <= set(cfg["experiments"])


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda c: c["stage2"].update(steps=0), "stage2/steps"),
    (lambda c: c["preprocess"].update(grid=[30, 48, 48]), "preprocess/grid"),
    (lambda c: c["encoder"].update(strides=[2, 2, 2, 2, 2]), "encoder/strides"),
    (lambda c: c.update(run=["nope"]), "run"),
    (lambda c: c.update(unknown_key=1), "<top>"),
    (lambda c: c["experiments"]["rep_only"].update(seg="XL"), "experiments/rep_only/seg"),
])
def test_invalid_values_name_the_key(mutate, key: str) -> None:
    cfg = copy.deepcopy(load_config())
    mutate(cfg)
    with pytest.raises(ConfigError, match=key):
        validate_config(cfg)


def test_labeler_settings_are_checked() -> None:
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    cfg["pseudolabels"]["sources"] = ["classical", "totalseg"]
    with pytest.raises(ConfigError, match="unknown labelers \\['totalseg'\\]"):
        validate_config(cfg)
    cfg["pseudolabels"]["labelers"]["totalseg"] = {"backend": "totalsegmentator", "task": "total"}
    with pytest.raises(ConfigError, match="totalseg.*needs 'weights_dir'"):
        validate_config(cfg)
    cfg["pseudolabels"]["sources"] = ["classical"]
    del cfg["pseudolabels"]["labelers"]["totalseg"]
    cfg["pseudolabels"]["labelers"]["classical"]["params"] = {"air_hu": -450, "lung_hu": 3}
    with pytest.raises(ConfigError, match="unknown \\['lung_hu'\\]"):
        validate_config(cfg)
