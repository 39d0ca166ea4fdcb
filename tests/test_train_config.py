"""edgebvit/config.py, edgebvit/recipes.py and `edgebvit train`'s option resolution (no training)."""
import json

import pytest
import yaml
from click.testing import CliRunner

import edgebvit  # noqa: F401
from edgebvit.cli import cli
from edgebvit.commands.train import resolve_run_config
from edgebvit.training.config import (RunConfig, auto_batch_size, load_config_file, merge, parse_overrides,
                                      set_value)
from edgebvit.errors import EdgebvitError
from edgebvit.training.recipes import RECIPES, get_recipe


def test_round_trip_and_legacy_keys(tmp_path):
    cfg = merge(RunConfig(), {"epochs": 7, "optim": {"learning_rate": 5e-4}, "augment.flip": True})
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # config.json files written before the sections existed still load.
    old = {"model": "binaryvit_tiny_32", "learning_rate": 2e-3, "label_smoothing": 0.1, "model_overrides": {}}
    loaded = RunConfig.from_dict(old)
    assert loaded.optim.learning_rate == 2e-3 and loaded.augment.label_smoothing == 0.1


def test_dotted_and_short_keys_with_types():
    cfg = RunConfig()
    set_value(cfg, "optim.learning_rate", "5e-4")
    set_value(cfg, "pad_crop", "4")  # unique short name -> augment.pad_crop
    set_value(cfg, "flip", "true")
    set_value(cfg, "steps_per_epoch", "none")
    assert cfg.optim.learning_rate == 5e-4 and cfg.augment.pad_crop == 4 and cfg.augment.flip is True
    assert cfg.steps_per_epoch is None
    with pytest.raises(EdgebvitError, match="unknown run config key"):
        set_value(cfg, "optim.lr", 1)
    with pytest.raises(EdgebvitError, match="expected int"):
        set_value(cfg, "epochs", "three")
    with pytest.raises(EdgebvitError, match="expected bool"):
        set_value(cfg, "flip", "maybe")
    # "weight" exists only in distill; "learning_rate" only in optim: both resolve.
    set_value(cfg, "weight", 0.5)
    assert cfg.distill.weight == 0.5
    assert parse_overrides(["a=1", "b=[3, 5]", "c=x"]) == {"a": 1, "b": [3, 5], "c": "x"}
    with pytest.raises(EdgebvitError, match="key=value"):
        parse_overrides(["oops"])


def test_validation_messages():
    with pytest.raises(EdgebvitError, match="needs a teacher"):
        merge(RunConfig(), {"distill.mode": "soft"}).validate()
    with pytest.raises(EdgebvitError, match="regularizer_mix=scale"):
        merge(RunConfig(), {"distill": {"mode": "soft", "teacher": "t", "weight": 1.0},
                            "optim": {"regularizer_weight": 0.1}}).validate()
    with pytest.raises(EdgebvitError, match="optim.optimizer"):
        merge(RunConfig(), {"optim.optimizer": "sgd"}).validate()
    with pytest.raises(EdgebvitError, match="stage1_epochs"):
        merge(RunConfig(), {"epochs": 2, "optim.stage1_epochs": 2}).validate()


def test_recipes_scale_lr_with_batch_and_follow_the_papers():
    for name in RECIPES:
        merge(RunConfig(), get_recipe(name, 256))  # every key is a real config key
    assert get_recipe("binaryvit", 512)["optim"]["learning_rate"] == pytest.approx(5e-4)
    assert get_recipe("bhvit", 256)["optim"]["learning_rate"] == pytest.approx(2.5e-4)
    b = get_recipe("binaryvit", 128)
    assert b["distill"] == {"mode": "soft", "temperature": 1.0, "weight": 1.0}
    assert b["optim"]["weight_decay"] == 0.0 and b["optim"]["warmup_epochs"] == 0.0
    d = get_recipe("deit", 512)
    assert d["optim"]["weight_decay"] == 0.05 and d["augment"]["mixup_alpha"] == 0.8
    with pytest.raises(EdgebvitError, match="unknown recipe"):
        get_recipe("resnet", 1)


def test_precedence_recipe_file_options_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({"epochs": 9, "optim": {"min_learning_rate": 1e-6}, "augment": {"flip": False}}))
    cfg = resolve_run_config(
        recipe="binaryvit", config_file=str(f),
        options={"batch_size": 256, "distill.teacher": "runs/t", "epochs": None},
        overrides=["optim.min_learning_rate=2e-6", "distill.temperature=2"],
    )
    assert cfg.recipe == "binaryvit" and cfg.epochs == 9  # file; option left unset
    assert cfg.optim.learning_rate == pytest.approx(5e-4 * 256 / 512)  # recipe, scaled by the final batch
    assert cfg.optim.min_learning_rate == 2e-6  # override beats file beats recipe
    assert cfg.augment.flip is False and cfg.augment.pad_crop == 4  # file beats recipe, recipe kept
    assert cfg.distill.mode == "soft" and cfg.distill.temperature == 2.0
    # A teacher alone turns on the papers' KD; no teacher with a distilling recipe is an error.
    assert resolve_run_config(options={"distill.teacher": "t"}).distill.mode == "soft"
    with pytest.raises(EdgebvitError, match="needs a teacher"):
        resolve_run_config(recipe="binaryvit", options={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(EdgebvitError, match="not valid YAML"):
        load_config_file(bad)
    with pytest.raises(EdgebvitError, match="cannot read"):
        load_config_file(tmp_path / "missing.json")


def test_auto_batch_size_is_32_on_a_short_budget():
    # 94 steps at 128 (4,000 images x 3 epochs) is short: batch 32; the quickstart's 625 is not.
    assert auto_batch_size(4000, 3) == 32 and auto_batch_size(40000, 2) == 128
    assert auto_batch_size(128 * 500, 1) == 128 and auto_batch_size(128 * 499, 1) == 32
    assert auto_batch_size(128 * 250, 2) == 128 and auto_batch_size(10, 1) == 32
    assert RunConfig().validate().batch_size is None  # resolved once the data is loaded
    assert resolve_run_config(options={"batch_size": 64}).batch_size == 64  # a given batch is kept
    # A recipe without a batch is its design at 128, its lr scaled for 128.
    cfg = resolve_run_config(recipe="deit", options={})
    assert cfg.batch_size == 128 and cfg.optim.learning_rate == pytest.approx(5e-4 * 128 / 512)


def test_cli_dry_run_prints_resolved_config(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "--recipe", "deit", "--model", "vit_tiny_32_fp", "--batch-size", "64",
                              "augment.mixup_alpha=0.2", "--set", "depths=2", "--dry-run"])
    assert res.exit_code == 0, res.output + res.stderr
    shown = yaml.safe_load(res.output)
    assert shown["model"] == "vit_tiny_32_fp" and shown["model_overrides"] == {"depths": 2}
    assert shown["augment"]["mixup_alpha"] == 0.2 and shown["optim"]["weight_decay"] == 0.05
    assert shown["optim"]["learning_rate"] == pytest.approx(5e-4 * 64 / 512)
    res = runner.invoke(cli, ["train", "--model", "binaryvit_tiny_32", "--set", "nope=1", "--dry-run"])
    assert res.exit_code != 0 and "no option nope" in res.stderr
    res = runner.invoke(cli, ["train", "bogus_key=1", "--dry-run"])
    assert res.exit_code != 0 and "unknown run config key" in res.stderr
    res = runner.invoke(cli, ["train", "--resume", str(tmp_path), "--epochs", "3"])
    assert res.exit_code != 0 and "--resume takes its settings" in res.stderr
    assert "KEY=VALUE" in runner.invoke(cli, ["train", "--help"]).output
