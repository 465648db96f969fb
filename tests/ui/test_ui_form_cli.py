"""Issue #10's Done-when for the window: for every job the window starts, the same choices set once through the
generated Advanced form and once as command-line arguments give equal job configs; 0 reaches the engine as 0.

The form is the real Model tab (``app.ui.config_form`` generated from the job config's field specs); the CLI
arguments are written by ``app.cli.options.to_argv`` from the same choices and parsed by the real parser.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.cli import build_parser
from app.cli.options import config_from_args, to_argv
from app.engine.jobconfig import JobConfig
from app.engine.registry import job
from app.ui.state import SC_JOBS

# config values (None = left at the config's own "None" meaning, which the form shows as its lowest value)
CHOICES: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 4, "patience": 0, "grad_clip": 0.0, "freeze": "last:1", "val_frac": 0.2,
                 "lr": 2e-4, "max_cells": None, "seed": 3, "class_weight": "none", "live_cells": 0},
    "pretrain": {"preset": "small", "epochs": 0.5, "batch_size": 16, "warmup_frac": 0.0, "live_cells": 0,
                 "pooling": "mean", "w_supervised": 0.0, "lr": None},
    "embed": {"batch_size": 8, "max_len": 256},
}


def form_config(win: Any, task: str, choices: dict[str, Any], extra: dict[str, Any] | None = None) -> JobConfig:
    """The job config the window starts after ``choices`` (and form-only ``extra`` editors) were set in the
    Advanced form."""
    mt = win.model_tab
    mt.set_task(task)
    for k, v in (extra or {}).items():
        mt.set_param(k, v)
    for k, v in choices.items():
        if v is not None:
            mt.set_param(k, v)
        else:  # the lowest value stands for None ("all", "by preset")
            mt.set_param(k, mt.editors[k].minimum())
    name = SC_JOBS.get(task, "gp.cv")
    target, cfg = win.state.job_spec("RUN")
    assert target == job(name).target
    return job(name).config.from_dict(cfg)


def cli_config(cls: type[JobConfig], argv: list[str], choices: dict[str, Any]) -> JobConfig:
    args = build_parser().parse_args(argv + to_argv(cls, {k: v for k, v in choices.items() if v is not None}))
    return config_from_args(cls, args)


@pytest.fixture
def sc_win(win):
    s = win.state
    s.kind, s.data_path, s.label_key = "singlecell", "cells.h5ad", "cell_type"
    win.model_tab.rebuild()
    return win


@pytest.mark.parametrize("task", ["finetune", "pretrain", "embed"])
def test_single_cell_form_and_cli_give_equal_configs(qtbot, sc_win, task: str) -> None:
    win = sc_win
    cls = job(SC_JOBS[task]).config
    got = form_config(win, task, CHOICES[task])
    base = {"finetune": ["celllm", "finetune", "--data", "cells.h5ad", "--label-key", "cell_type", "--out", "RUN",
                         "--init", win.state.model_dir],
            "pretrain": ["celllm", "pretrain", "--data", "cells.h5ad", "--out", "RUN"],
            "embed": ["celllm", "embed", "--data", "cells.h5ad", "--model", win.state.model_dir,
                      "--out", "RUN/embedded.h5ad"]}[task]
    want = cli_config(cls, base, CHOICES[task])
    if task == "embed":  # the window runs every job in a run folder of its history; the CLI writes OUT only
        want = dataclasses.replace(want, run_dir=got.run_dir)
    assert got == want
    if task == "finetune":  # 0 means 0 (the engine's default is never slipped in)
        assert got.patience == 0 and got.grad_clip == 0.0 and got.live_cells == 0 and got.max_cells is None


def test_genotype_form_and_cli_give_equal_configs(qtbot, win) -> None:
    s = win.state
    s.kind, s.data_path, s.pheno_path, s.trait = "genotype", "g.csv", "p.csv", "yield"
    win.model_tab.rebuild()
    choices = {"folds": 4, "repeats": 2, "seed": 0, "epochs": None, "group": "family"}
    # a deep model's own hyper-parameter: its own editor in the form, part of --params on the command line
    got = form_config(win, "dnngp", choices, extra={"dnngp.dropout1": 0.3})
    argv = ["gp", "cv", "--geno", "g.csv", "--pheno", "p.csv", "--trait", "yield", "--model", "DNNGP",
            "--params", '{"dnngp": {"dropout1": 0.3}}', "--out", "RUN"]
    want = cli_config(job("gp.cv").config, argv, choices)
    assert got == want and got.folds == 4 and got.seed == 0


def test_every_advanced_setting_has_an_editor_from_its_spec(qtbot, sc_win) -> None:
    """The form is generated: each advanced field of the config has an editor, with its help as tooltip."""
    from app.engine.jobconfig import field_specs

    mt = sc_win.model_tab
    for task, name in SC_JOBS.items():
        mt.set_task(task)
        specs = [sp for sp in field_specs(job(name).config) if sp.advanced]
        assert list(mt.editors) == [sp.name for sp in specs]
        for sp in specs:
            assert sp.help.split(" ")[0] in mt.editors[sp.name].toolTip()


def test_evaluate_form_and_cli_give_equal_configs(qtbot, sc_win) -> None:
    """"Evaluate (K repeats)": the fine-tune form plus the repeated-evaluation form (EvaluateConfig's own
    fields) give the config of ``celllm finetune ... --repeats K --scratch --label-fractions F``."""
    from app.engine.jobconfig import field_specs

    win, cls = sc_win, job("celllm.evaluate").config
    mt = win.model_tab
    form_config(win, "finetune", CHOICES["finetune"])
    specs = [sp for sp in field_specs(cls) if sp.group == "evaluation"]
    assert list(mt.eval_form.editors) == [sp.name for sp in specs] == ["repeats", "scratch", "label_fractions"]
    evaluation = {"repeats": 4, "scratch": True, "label_fractions": ("0.1", "0.5")}
    for k, v in evaluation.items():
        mt.set_eval_param(k, list(v) if isinstance(v, tuple) else v)
    target, cfg = win.state.job_spec("RUN", evaluate=True)
    got = cls.from_dict(cfg)
    argv = ["celllm", "finetune", "--data", "cells.h5ad", "--label-key", "cell_type", "--out", "RUN",
            "--init", win.state.model_dir]
    want = cli_config(cls, argv, {**CHOICES["finetune"], **evaluation})
    assert target == job("celllm.evaluate").target and got == want and got.repeats == 4


def test_none_meanings_fit_their_spin_boxes(qtbot, sc_win) -> None:
    """A spin box shows the short "None" meaning ("by model size"); the detail stands beside it, and goes
    when another value is chosen (it was cut off inside the editor: "…del size (tiny 5e-4, …")."""
    from PySide6.QtWidgets import QAbstractSpinBox

    mt = sc_win.model_tab
    for task in SC_JOBS:
        mt.set_task(task)
        for name, ed in mt.editors.items():
            if isinstance(ed, QAbstractSpinBox) and ed.specialValueText():
                assert ed.fontMetrics().horizontalAdvance(ed.specialValueText()) + 40 < ed.maximumWidth(), name
    mt.set_task("finetune")
    lr, hint = mt.editors["lr"], mt.form.hints["lr"]
    assert lr.specialValueText() == "by model size" and hint.text().startswith("tiny ")
    assert not hint.isHidden()
    mt.set_param("lr", 1e-4)
    assert hint.isHidden()
