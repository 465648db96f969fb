"""The window's half of the job contract, without a window: the Advanced form starts from the configs'
defaults, and what the form holds reaches the job config unchanged (0 stays 0)."""

from __future__ import annotations

import pytest

from app.data.errors import DataError
from app.engine.celllm.job_configs import FinetuneConfig, PretrainConfig
from app.engine.gp.job_configs import GPCVConfig
from app.ui.state import GP_DEFAULTS, SC_DEFAULTS, AppState


def _sc_state(task: str, **params: object) -> AppState:
    s = AppState(kind="singlecell", data_path="cells.h5ad", label_key="cell_type", task=task)
    s.params = {**SC_DEFAULTS[task], **params}
    return s


def test_form_defaults_are_the_config_defaults() -> None:
    ft, pre = FinetuneConfig.defaults(), PretrainConfig.defaults()
    assert SC_DEFAULTS["finetune"]["epochs"] == ft["epochs"] and SC_DEFAULTS["pretrain"]["batch_size"] == pre[
        "batch_size"]
    assert GP_DEFAULTS["folds"] == GPCVConfig.defaults()["folds"]


def test_zero_from_the_form_reaches_the_job_as_zero() -> None:
    _, cfg = _sc_state("finetune", patience=0, grad_clip=0.0).job_spec("RUN")
    typed = FinetuneConfig.from_dict(cfg)
    assert typed.patience == 0 and typed.grad_clip == 0.0
    assert typed.lr is None and typed.max_cells is None  # the form's "by preset" / "all" (0 is not valid there)
    assert typed.epochs == FinetuneConfig.defaults()["epochs"]


def test_an_invalid_zero_is_refused_not_replaced_by_the_default() -> None:
    with pytest.raises(DataError, match="test_frac"):
        _sc_state("finetune", test_frac=0.0).job_spec("RUN")
    with pytest.raises(DataError, match="batch_size"):
        _sc_state("pretrain", batch_size=0).job_spec("RUN")


def test_same_choices_through_the_form_and_the_cli_give_equal_configs() -> None:
    from app.cli import build_parser
    from app.cli.options import config_from_args

    _, cfg = _sc_state("finetune", epochs=4, patience=0, freeze="last:1", test_frac=0.2).job_spec("RUN")
    args = build_parser().parse_args(["celllm", "finetune", "--data", "cells.h5ad", "--label-key", "cell_type",
                                      "--out", "RUN", "--epochs", "4", "--patience", "0", "--freeze", "last:1",
                                      "--test-frac", "0.2", "--init", str(cfg["init"])])
    assert FinetuneConfig.from_dict(cfg) == config_from_args(FinetuneConfig, args)


def test_a_new_hyper_parameter_appears_in_the_form() -> None:
    from dataclasses import dataclass

    from app.engine.jobconfig import param
    from app.ui.state import form_defaults

    @dataclass(frozen=True, kw_only=True)
    class Extended(FinetuneConfig):  # the README's one-line example
        label_smoothing: float = param(0.0, "cross-entropy label smoothing", min=0, max=1, advanced=True)

    assert form_defaults(Extended) == {**form_defaults(FinetuneConfig), "label_smoothing": 0.0}
