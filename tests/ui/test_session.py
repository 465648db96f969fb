"""The window's state is evented and its workflow runs without a window (``app.ui.session``, no Qt).

The session is driven here as the window would drive it: a Train press, then the end of each job as the
job runner reports it; the tests check what the session asks for next (jobs, embedding, map, steps).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.engine.events import Failed, Result
from app.ui.session import EMBED_TARGET, JobRequest, Session, kind_of
from app.ui.state import GP_TARGET, SC_TASKS, AppState, RunRecord

REPO = Path(__file__).resolve().parents[2]
TABS = ("data_tab", "model_tab", "train_tab", "results_tab", "export_tab")


class FakeAdata:
    """Just what the state reads of an AnnData when a dataset is set."""

    def __init__(self, n: int) -> None:
        self.n_obs = n
        self.obsm: dict[str, np.ndarray] = {}
        self.obs_names = [f"c{i}" for i in range(n)]


class FakeSummary:
    def __init__(self) -> None:
        self.label_columns = {"cell_type": {"a": 2, "b": 2}}


def recorder(session: Session) -> dict[str, list]:
    """Every request the session makes, by signal name."""
    got: dict[str, list] = {}
    for name in ("job_requested", "embedding_requested", "layout_requested", "gene_match_requested",
                 "step_requested", "run_opened", "problem"):
        got[name] = []
        getattr(session.events, name).connect(lambda *a, name=name: got[name].append(a))
    return got


@pytest.fixture
def sc_session(tmp_path: Path) -> tuple[Session, dict[str, list]]:
    s = Session(runs_root=lambda: tmp_path / "runs")
    got = recorder(s)
    s.state.set_singlecell("cells.h5ad", "cells.h5ad", FakeAdata(4), FakeSummary())
    return s, got


def test_assigning_a_field_emits_its_event_and_bulk_changes_emit_one() -> None:
    st = AppState()
    seen: list[tuple] = []
    st.events.model_dir.connect(lambda new, old: seen.append(("model_dir", new, old)))
    st.events.label_key.connect(lambda new: seen.append(("label_key", new)))
    st.events.layout.connect(lambda: seen.append(("layout", st.layout_kind)))
    st.events.dataset.connect(lambda: seen.append(("dataset",)))
    old = st.model_dir
    st.model_dir = "/models/mine"
    st.model_dir = "/models/mine"  # unchanged: no event
    st.label_key = "cell_type"
    st.set_layout(np.zeros((3, 2)), "UMAP")  # the kind is set before the layout event fires
    assert seen == [("model_dir", "/models/mine", old), ("label_key", "cell_type"), ("layout", "UMAP")]
    seen.clear()
    st.set_singlecell("x.h5ad", "x.h5ad", FakeAdata(3), FakeSummary())
    assert seen == [("dataset",)]  # one compound event, not one per field
    assert st.label_key == "cell_type" and st.manual is not None and st.manual.shape == (3,)
    seen.clear()
    st.assign_manual(np.array([0, 2]), "mine")  # an in-place change still announces itself
    manual: list[int] = []
    st.events.manual.connect(lambda: manual.append(1))
    st.assign_manual(np.array([1]), "other")
    assert manual == [1] and list(st.manual) == ["mine", "other", "mine"]


def test_new_dataset_asks_for_a_preview_map_and_a_new_model_for_the_gene_match(sc_session) -> None:
    s, got = sc_session
    assert got["layout_requested"] == [(False,)]  # the data's own map before any model
    s.state.model_dir = "/elsewhere/model"
    assert got["gene_match_requested"] == [()]


def test_train_asks_for_the_job_and_a_finished_finetune_embeds_every_cell(sc_session, tmp_path: Path) -> None:
    s, got = sc_session
    s.state.task = "finetune"
    s.state.params = {"epochs": 2, "patience": 5}
    req = s.train()
    assert got["job_requested"] == [(req,)] and req.target == SC_TASKS["finetune"][1]
    assert req.config["epochs"] == 2 and req.config["label_key"] == "cell_type" and req.purpose == "train"
    assert Path(req.run_dir).parent == tmp_path / "runs"
    s.job_started(req)  # as the runner reports it
    assert s.busy and s.state.current is not None and s.state.current.path == req.run_dir
    assert s.train() is None  # one job at a time
    runs_events: list[int] = []
    s.state.events.runs.connect(lambda: runs_events.append(1))
    Path(req.run_dir).mkdir(parents=True)
    (Path(req.run_dir) / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.9}}))
    s.job_finished(req, Result({"model_dir": "m"}))
    assert s.state.current.status == "done" and runs_events == [1]
    assert s.state.metrics == {"test": {"accuracy": 0.9}}
    follow = got["job_requested"][-1][0]
    assert follow.target == EMBED_TARGET and follow.purpose == "embed-all"
    assert follow.config["model"] == str(Path(req.run_dir) / "model") and follow.config["data"] == "cells.h5ad"
    # the embed-all job's end asks for its output to be read onto the cells; then the map, then Results
    s.job_started(follow)
    s.job_finished(follow, Result({"out": "E.h5ad"}))
    assert got["embedding_requested"] == [("E.h5ad",)]
    assert s.state.current.path == req.run_dir  # a follow-up never enters the run history
    s.embedding_loaded()
    assert got["layout_requested"][-1] == (True,) and got["step_requested"][-1] == ("results",)


def test_evaluate_asks_for_the_evaluate_job_and_its_end_shows_the_summary(sc_session, tmp_path: Path) -> None:
    from app.ui.state import EVAL_TARGET

    s, got = sc_session
    s.state.task = "pretrain"
    assert s.evaluate() is None and "Fine-tune" in got["problem"][-1][1]  # only for fine-tuning
    s.state.task = "finetune"
    s.state.params = {"epochs": 2}
    s.state.eval_params = {"repeats": 4, "scratch": True, "label_fractions": ["0.1"]}
    req = s.evaluate()
    assert req.target == EVAL_TARGET and req.kind == "evaluate" and req.purpose == "train"
    assert (req.config["repeats"], req.config["scratch"], req.config["label_fractions"]) == (4, True, ["0.1"])
    assert req.config["epochs"] == 2 and req.config["label_key"] == "cell_type"
    s.job_started(req)
    assert s.state.current.kind == "evaluate" and kind_of(EVAL_TARGET) == "evaluate"
    summary = {"repeats": 4, "methods": {"celllm": {}, "baseline": {}}, "rows": []}
    Path(req.run_dir).mkdir(parents=True)
    (Path(req.run_dir) / "metrics.json").write_text(json.dumps(summary))
    s.job_finished(req, Result(summary))
    assert s.state.evaluation == summary and s.state.metrics is None  # not one split's scores
    assert got["step_requested"][-1] == ("results",) and got["job_requested"][-1] == (req,)  # no embed-all
    s.state.evaluation = None
    assert not s.load_evaluation(str(tmp_path / "nowhere")) and "no metrics.json" in got["problem"][-1][1]


def test_stopped_and_failed_runs_are_recorded_and_start_nothing(sc_session) -> None:
    s, got = sc_session
    for final, status in ((Result({}, cancelled=True), "cancelled"), (Failed("boom"), "failed")):
        req = s.train()
        s.job_started(req)
        s.job_finished(req, final)
        assert s.state.current.status == status and not s.busy
    assert all(r[0].purpose == "train" for r in got["job_requested"])  # no follow-up job


def test_not_ready_is_a_problem_not_a_job(tmp_path: Path) -> None:
    s = Session(runs_root=lambda: tmp_path)
    got = recorder(s)
    assert s.train() is None
    assert got["problem"] == [("Not ready to train", "Open a dataset on the Data tab first.", "")]
    s.state.set_genotype("g.csv", None, None, {})
    assert s.train() is None and "phenotype" in got["problem"][-1][1] and not got["job_requested"]


def test_pretrain_result_becomes_the_starting_model_and_cv_shows_results(sc_session) -> None:
    s, got = sc_session
    s.state.task = "pretrain"
    req = s.train()
    s.job_started(req)
    s.job_finished(req, Result({"model_dir": "/runs/pre/model"}))
    assert s.state.model_dir == "/runs/pre/model" and got["gene_match_requested"]
    s.state.set_genotype("g.csv", None, None, {})
    s.state.set_phenotypes("p.csv", pd.DataFrame({"id": ["a"], "y": [1.0]}), "y")
    s.state.task = "compare"
    req = s.train()
    assert req.target == GP_TARGET and req.config["trait"] == "y"
    s.job_started(req)
    s.job_finished(req, Result({"folds": [{"model": "GBLUP", "fold": 1, "pearson": 0.5}]}))
    assert s.state.gp_result["folds"][0]["pearson"] == 0.5 and got["step_requested"][-1] == ("results",)
    fin = s.train_final("GBLUP")
    assert fin.purpose == "gp-final" and fin.config["models"] == ["GBLUP"] and "folds" not in fin.config
    s.job_started(fin)
    s.job_finished(fin, Result({"gebv_csv": "g.csv", "models": ["GBLUP"]}))
    assert s.state.gp_final["gebv_csv"] == "g.csv"


def test_a_direct_job_is_known_by_its_target_not_by_the_chosen_task(sc_session) -> None:
    s, got = sc_session
    s.state.task = "finetune"
    req = JobRequest("app.engine.demo_job:demo", {"steps": 3}, "/tmp/x")
    s.job_started(req)
    s.job_finished(req, Result({"steps_done": 3}))
    assert s.state.current.kind == "demo" and not got["job_requested"]  # not mistaken for a fine-tune
    assert kind_of(SC_TASKS["embed"][1]) == "embed" and kind_of(GP_TARGET) == "gp-cv"
    assert isinstance(s.state.current, RunRecord)


def test_session_and_state_import_no_qt() -> None:
    code = ("import sys, app.ui.session, app.ui.state, app.ui.shell\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt'))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tab", TABS)
def test_no_tab_refers_to_another_tab_or_the_window(tab: str) -> None:
    """Beside the import-linter independence contract (imports), no tab reaches another at run time
    through an attribute (``win.results_tab``) or holds the window itself."""
    tree = ast.parse((REPO / "app" / "ui" / f"{tab}.py").read_text())
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not (attrs & (set(TABS) | {"win", "tabs"})), attrs & (set(TABS) | {"win", "tabs"})
    assert "MainWindow" not in names
