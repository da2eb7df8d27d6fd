"""Float hyperparameters are bounded where the config is validated.

They end up in float32 tensors (largest value 3.4e38): ``train.lr=1e300`` used to pass
validation and then fail every job ("value cannot be converted to type float without
overflow", exit 1). Now a value out of bounds is one line naming its key, exit 2, and
within the bounds an absurd value at worst makes a run diverge (recorded as such).
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_args, tiny_config
from lotto_engine.config import (
    MAX_LR,
    MAX_MOMENTUM,
    MAX_WEIGHT_DECAY,
    PRESETS,
    TrainConfig,
    load_config,
)
from lotto_engine.runner import Runner
from lotto_engine.store import Store
from lotto_tui.cli import main

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def one_config_error(code: int, err: str, key: str, why: str = "") -> None:
    """Exit 2 and exactly one stderr line: the config error naming ``key`` (and ``why``)."""
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"lotto-tui: config error: {key}: "), err
    assert why in lines[0], err

OUT_OF_BOUNDS = [
    ("train.lr", "1e300", "less than or equal to 1e+30"),  # the review's value
    ("train.lr", "1e31", "less than or equal to 1e+30"),
    ("train.lr", "0", "greater than 0"),
    ("train.lr", "-0.1", "greater than 0"),
    ("train.weight_decay", "1e300", "less than or equal to 10000"),
    ("train.weight_decay", "1e5", "less than or equal to 10000"),
    ("train.weight_decay", "-1e-4", "greater than or equal to 0"),
    ("train.momentum", "1.0", "less than or equal to 0.99999999"),
    ("train.momentum", "0.999999999999", "less than or equal to 0.99999999"),
    ("train.momentum", "-0.5", "greater than or equal to 0"),
    ("train.lr_gamma", "0", "greater than 0"),
    ("train.lr_gamma", "1e300", "less than or equal to 1"),
]


@pytest.mark.parametrize(("key", "value", "why"), OUT_OF_BOUNDS, ids=[f"{k}={v}" for k, v, _ in OUT_OF_BOUNDS])
def test_an_out_of_bounds_float_is_one_line_exit_2_and_no_store(capsys, tmp_path, monkeypatch, key, value, why):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "runs"
    code = main(["--batch", *tiny_args(f"{key}={value}"), "--store", str(store)])
    one_config_error(code, capsys.readouterr().err, key, why)
    assert not store.exists()  # refused before anything started


@pytest.mark.parametrize("command", [["config"], ["--batch"]])
def test_the_same_bound_through_config_and_a_toml_file(capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text("[train]\nlr = 1e300\nweight_decay = 5e-4\n")
    store = ["--store", str(tmp_path / "runs")] if command == ["--batch"] else []
    code = main([*command, "--config", str(tmp_path / "exp.toml"), *store])
    one_config_error(code, capsys.readouterr().err, "train.lr", "1e+30")
    assert not (tmp_path / "runs").exists()


def test_the_defaults_and_every_preset_still_validate(capsys):
    defaults = TrainConfig()
    assert (defaults.lr, defaults.momentum, defaults.weight_decay, defaults.lr_gamma) == (0.01, 0.9, 5e-4, 0.1)
    for preset in (None, *PRESETS):
        cfg = load_config(preset=preset)
        assert 0 < cfg.train.lr <= MAX_LR and 0 <= cfg.train.weight_decay <= MAX_WEIGHT_DECAY
        args = ["config"] + ([] if preset is None else ["--preset", preset])
        assert main(args) == 0, capsys.readouterr().err
        assert capsys.readouterr().err == ""
    assert load_config(preset="demo").train.lr == 0.05  # the documented demo values
    assert load_config(preset="seed-paper").train.momentum == 0.9


def test_the_bounds_themselves_are_accepted_and_fit_float32():
    cfg = load_config(overrides=[
        f"train.lr={MAX_LR!r}", f"train.weight_decay={MAX_WEIGHT_DECAY!r}",
        f"train.momentum={MAX_MOMENTUM!r}", "train.lr_gamma=1.0",
    ]).train
    assert (cfg.lr, cfg.weight_decay, cfg.momentum) == (MAX_LR, MAX_WEIGHT_DECAY, MAX_MOMENTUM)
    # Adam's first step scales lr by 1 / (1 - beta1): still a float32 at the extremes
    assert MAX_LR / (1 - MAX_MOMENTUM) < FLOAT32_MAX / 3
    torch.zeros(()).fill_(MAX_LR / (1 - MAX_MOMENTUM))
    torch.zeros(()).fill_(MAX_WEIGHT_DECAY)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_largest_allowed_values_diverge_instead_of_failing(tmp_path, optimizer):
    # before: Adam with lr 1e30 and momentum 0.999999999999 failed with an overflow error
    cfg = tiny_config(
        f'train.optimizer="{optimizer}"', f"train.lr={MAX_LR!r}", f"train.momentum={MAX_MOMENTUM!r}",
        f"train.weight_decay={MAX_WEIGHT_DECAY!r}", "train.dense_epochs=1",
    )
    with Store(tmp_path) as store:
        summary = Runner(cfg, store).run()
        runs = store.runs(summary.experiment_id)
    dense = [r for r in runs if r.method == "dense"]
    assert [r.status for r in dense] == ["diverged"], [(r.status, r.error) for r in runs]
