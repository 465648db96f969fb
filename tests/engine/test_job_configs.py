"""The job contract: one typed config per job owns every default; the CLI is generated from it; 0 means 0."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from app.cli import build_parser
from app.cli.options import add_config_options, config_from_args, to_argv
from app.data.errors import DataError
from app.engine.celllm.job_configs import FinetuneConfig, PretrainConfig
from app.engine.gp.job_configs import GPCVConfig
from app.engine.jobconfig import example_values, field_specs, param
from app.engine.registry import JOBS

CLI = {"celllm.finetune": ["celllm", "finetune"], "celllm.evaluate": ["celllm", "finetune"],
       "celllm.pretrain": ["celllm", "pretrain"],
       "celllm.embed": ["celllm", "embed"], "celllm.annotate": ["celllm", "annotate"], "gp.cv": ["gp", "cv"],
       "gp.train": ["gp", "train"], "gp.predict": ["gp", "predict"]}


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args([*CLI[name], *argv])


def test_every_registered_job_has_a_cli_subcommand() -> None:
    assert set(CLI) == set(JOBS)


@pytest.mark.parametrize("name", sorted(CLI))
def test_cli_arguments_and_the_field_spec_path_give_equal_configs(name: str) -> None:
    """Every CLI-exposed setting set to a non-default value once through argparse and once as form values
    (what the window's generated form hands to ``from_dict``): the two configs are equal."""
    cls = JOBS[name].config
    values = example_values(cls)
    from_cli = config_from_args(cls, parse(name, to_argv(cls, values)))
    from_form = cls.from_dict({k: (str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
                               for k, v in values.items()})  # a form may hand numbers back as text
    assert from_cli == from_form
    defaults = cls.from_dict({s.name: values[s.name] for s in field_specs(cls) if s.required})
    changed = [s.name for s in field_specs(cls) if s.cli and getattr(from_cli, s.name) != getattr(defaults, s.name)]
    optional = {s.name for s in field_specs(cls) if s.cli and not s.required}
    assert set(changed) == optional  # every option really reached the config


def test_cli_help_shows_the_config_defaults() -> None:
    ft = build_parser()._subparsers._group_actions[0].choices["celllm"]  # type: ignore[union-attr]
    text = ft._subparsers._group_actions[0].choices["finetune"].format_help()  # type: ignore[union-attr]
    assert f"(default: {FinetuneConfig.defaults()['epochs']} epochs)" in text
    assert "--patience" in text and "--head-lr" in text  # a config field is an option without CLI code


def test_zero_means_zero_through_the_cli() -> None:
    cfg = config_from_args(FinetuneConfig, parse("celllm.finetune", [
        "--data", "x.h5ad", "--out", "run", "--patience", "0", "--grad-clip", "0", "--seed", "0"]))
    assert cfg.patience == 0 and cfg.grad_clip == 0.0 and cfg.seed == 0
    assert config_from_args(PretrainConfig, parse("celllm.pretrain", [
        "--data", "x.h5ad", "--out", "r", "--redraw-every", "0"])).redraw_every == 0


@pytest.mark.parametrize(("key", "value", "words"), [
    ("batch_size", 0, "at least 1"), ("threads", 0, "at least 1"), ("epochs", 0, "at least 1"),
    ("test_frac", 0, "greater than 0"), ("val_frac", 0.6, "fit together"), ("freeze", "half", "freeze"),
    ("class_weight", "some", "one of"), ("epochs", 2.5, "whole number"), ("lr", "fast", "a number"),
])
def test_out_of_range_values_are_refused_with_a_clear_message(key: str, value: object, words: str) -> None:
    base = {"data": "x.h5ad", "run_dir": "run"}
    if key == "val_frac":
        base["test_frac"] = 0.5
    with pytest.raises(DataError) as err:
        FinetuneConfig.from_dict({**base, key: value})
    assert words in str(err.value) and key.split("_")[0] in str(err.value)


def test_unknown_keys_are_refused_with_the_closest_name() -> None:
    with pytest.raises(DataError, match="Did you mean epochs"):
        FinetuneConfig.from_dict({"data": "x", "run_dir": "r", "epoch": 3})


def test_round_trip_through_run_json_is_the_identity() -> None:
    for entry in JOBS.values():
        cfg = entry.config.from_dict(example_values(entry.config))
        assert entry.config.from_dict(cfg.to_dict()) == cfg


def test_gp_models_normalised_once() -> None:
    cfg = GPCVConfig.from_dict({"geno": "g", "pheno": "p", "trait": "t", "models": ["GBLUP", "deepgs,DLGWAS"]})
    assert cfg.models == ("gblup", "deepgs", "dlgwas")
    assert GPCVConfig.from_dict({"geno": "g", "pheno": "p", "trait": "t", "models": "all"}).models[0] == "gblup"
    with pytest.raises(DataError, match="unknown model"):
        GPCVConfig.from_dict({"geno": "g", "pheno": "p", "trait": "t", "models": "svm"})


def test_zero_reaches_the_job_process_as_zero(tmp_path) -> None:
    """What the jobs layer hands the spawned job (the config the job function receives) keeps 0 as 0; a 0 the
    job cannot use is refused before any run folder exists, never replaced by the default."""
    from app.jobs.process import prepare_run

    target = JOBS["celllm.finetune"].target
    rd, child_cfg, _ = prepare_run(target, {"data": "x.h5ad", "patience": 0, "grad_clip": 0.0, "seed": 0},
                                   tmp_path / "run")
    try:
        typed = FinetuneConfig.coerce(child_cfg)
        assert typed.patience == 0 and typed.grad_clip == 0.0 and typed.seed == 0
        assert json.loads((tmp_path / "run" / "config.json").read_text())["patience"] == 0  # run.json too
    finally:
        if rd.lock is not None:
            rd.lock.release()
    with pytest.raises(DataError, match="test_frac"):
        prepare_run(target, {"data": "x.h5ad", "test_frac": 0}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


@dataclass(frozen=True, kw_only=True)
class ExtendedFinetune(FinetuneConfig):
    """The README's example: one line adds a hyper-parameter."""

    label_smoothing: float = param(0.0, "cross-entropy label smoothing", min=0, max=1, advanced=True)


def test_a_new_hyper_parameter_is_one_line_and_the_cli_gets_it() -> None:
    p = argparse.ArgumentParser()
    add_config_options(p, ExtendedFinetune)
    assert "label smoothing" in p.format_help()
    args = p.parse_args(["--data", "x.h5ad", "--out", "run", "--label-smoothing", "0.1"])
    assert config_from_args(ExtendedFinetune, args).label_smoothing == 0.1
    with pytest.raises(DataError, match="at most 1"):
        config_from_args(ExtendedFinetune, p.parse_args(["--data", "x", "--out", "r", "--label-smoothing", "2"]))


def test_config_choices_agree_with_their_owners_and_load_no_torch() -> None:
    import subprocess
    import sys

    from app.data.genotype.readers import ORIENTATIONS
    from app.engine.celllm.job_configs import PRESETS
    from app.engine.jobconfig import spec_of
    from app.models.celllm.config import PRESETS as MODEL_PRESETS

    assert set(PRESETS) == set(MODEL_PRESETS) and spec_of(PretrainConfig, "preset").choices == PRESETS
    # the learning rates by preset have one home: the jobs use the table the options' help is written from
    from app.engine.celllm.job_configs import FINETUNE_LR_BY_PRESET, PRETRAIN_LR_BY_PRESET

    assert set(FINETUNE_LR_BY_PRESET) == set(PRETRAIN_LR_BY_PRESET) == set(PRESETS)
    assert spec_of(FinetuneConfig, "lr").none_label == "by model size (tiny 5e-4, small 2e-4, full 1e-4)"
    assert spec_of(PretrainConfig, "lr").none_label == "by preset (tiny 1e-3, small 5e-4, full 1e-4)"
    # pretraining's max_len help names each preset's length: it must say what the model presets hold
    from app.models.celllm.config import preset

    lens = {n: preset(n, vocab_size=10).max_len for n in PRESETS}
    words = ", ".join(f"{n} {'all' if v is None else v}" for n, v in lens.items())
    assert spec_of(PretrainConfig, "max_len").none_label.replace(": all", " all") == f"the preset's ({words})"
    assert spec_of(GPCVConfig, "orientation").choices == ORIENTATIONS
    code = "import sys, app.engine.registry, app.cli.options; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the CLI's options and the window's form need no torch
