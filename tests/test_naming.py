"""Default experiment names (lotto_engine.naming): the base a config came from and what
differs from it, short enough for a table, and stable enough to be read back."""

from __future__ import annotations

from lotto_engine.config import load_config
from lotto_engine.naming import LIMIT, default_name, differences, name_origin, name_to_store


def test_a_preset_unchanged_is_named_after_the_preset() -> None:
    assert default_name(load_config(preset="demo"), "demo") == "demo"
    assert default_name(load_config(preset="reviewer"), "reviewer") == "reviewer"
    assert default_name(load_config(), None) == "defaults"


def test_each_setting_that_differs_from_the_preset_follows_it_in_reference_order() -> None:
    config = load_config(preset="demo", overrides=["train.lr=0.1", "grid.seeds=[0,1,2]"])
    assert default_name(config, "demo") == "demo, seeds=3, lr=0.1"  # grid comes before train
    sparse = load_config(preset="reviewer", overrides=["grid.sparsities=[0.5]"])
    assert default_name(sparse, "reviewer") == "reviewer, sparsities=[0.5]"
    odd_seeds = load_config(preset="demo", overrides=["grid.seeds=[3,4]", "model.name='lenet-300-100'"])
    assert default_name(odd_seeds, "demo") == "demo, model=lenet-300-100, seeds=[3,4]"


def test_where_and_how_a_grid_runs_is_not_part_of_its_name() -> None:
    config = load_config(preset="demo", overrides=[
        "run.device='cpu'", "run.threads=3", "run.store='elsewhere'", "data.root='/tmp/x'", "data.download=false",
    ])
    assert default_name(config, "demo") == "demo"


def test_a_long_list_of_differences_is_cut_at_the_limit_and_counted() -> None:
    config = load_config(preset="demo", overrides=[
        "model.width=3", "model.hidden=7", "grid.activations=['relu']", "grid.sparsities=[0.25,0.5]",
        "train.lr=0.3", "train.batch_size=7", "train.optimizer='adam'", "train.weight_decay=0.0",
    ])
    name = default_name(config, "demo")
    assert len(name) <= LIMIT
    shown = name.split(", ")[1:-1]
    more = int(name.rsplit("+", 1)[1].removesuffix(" more"))
    assert shown == list(differences(config, load_config(preset="demo")))[: len(shown)]
    assert len(shown) + more == 8


def test_a_file_base_is_compared_with_the_file_and_printed_safely() -> None:
    written = load_config(preset="seed-paper")
    edited = load_config(preset="seed-paper", overrides=["train.lr=0.05"])
    assert default_name(edited, "paper", reference=written) == "paper, lr=0.05"
    assert default_name(written, "paper") == "paper, dataset=cifar10"  # no reference: the defaults
    assert default_name(written, "bad\x1bname", reference=written) == "bad\\x1bname"


def test_a_stored_default_name_gives_back_its_base_and_a_chosen_name_itself() -> None:
    named = load_config(preset="demo", overrides=["train.lr=0.1", "run.name='demo, lr=0.1'"])
    assert name_origin(named) == ("demo", None)
    chosen = load_config(preset="demo", overrides=["run.name='my baseline'"])
    base, reference = name_origin(chosen)
    assert (base, reference) == ("my baseline", chosen)
    edited = load_config(preset="demo", overrides=["train.lr=0.2"])
    assert default_name(edited, base, reference=reference) == "my baseline, lr=0.2"
    # no name (an older release): the preset it differs least from
    assert name_origin(load_config(preset="reviewer", overrides=["train.lr=0.2"]))[0] == "reviewer"


def test_a_named_experiment_keeps_its_name_and_a_new_one_gets_the_default() -> None:
    config = load_config(preset="demo")
    assert name_to_store(config, "demo", None) == "demo"  # new experiment
    assert name_to_store(config, "demo", "") == "demo"  # stored without a name
    assert name_to_store(config, "demo", "my run") == ""  # "": the store keeps "my run"
    explicit = load_config(preset="demo", overrides=["run.name='mine'"])
    assert name_to_store(explicit, "demo", "my run") == "mine"


def test_the_runner_names_a_new_experiment_and_keeps_a_chosen_name(tmp_path) -> None:
    """What `--batch` does: a new experiment gets the default name; a later run.name
    renames it; running again without one keeps the chosen name."""
    from conftest import TINY

    from lotto_engine.runner import Runner
    from lotto_engine.store import Store

    config = load_config(preset="demo", overrides=[*TINY, f'run.store="{tmp_path}"'])
    default = default_name(config, "demo")
    assert default.startswith("demo, ")
    with Store(tmp_path) as store:
        Runner(config, store, default_name=default).run()
        assert store.experiment().name == default
        named = config.model_copy(update={"run": config.run.model_copy(update={"name": "mine"})})
        Runner(named, store, default_name=default).run()
        Runner(config, store, default_name=default).run()
        assert [e.name for e in store.experiments()] == ["mine"]


def test_batch_names_from_the_preset_or_the_config_files_stem(tmp_path) -> None:
    import argparse

    from lotto_tui.batch import _default_name

    config = load_config(preset="demo", overrides=["train.lr=0.1"])
    opts = argparse.Namespace(preset="demo", config=None)
    assert _default_name(opts, config) == "demo, lr=0.1"
    toml = tmp_path / "paper.toml"
    toml.write_text("[train]\nlr = 0.2\n")
    from_file = load_config(file=str(toml), overrides=["train.lr=0.3"])
    assert _default_name(argparse.Namespace(preset=None, config=str(toml)), from_file) == "paper, lr=0.3"
