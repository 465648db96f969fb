"""The workflow of the window, without Qt: what runs after what.

``Session`` owns the ``AppState`` and decides the steps a scientist's click leads to: which job a Train
press starts (and whether the data are ready for it), what follows a finished job (a fine-tune is applied at
once: its model embeds every cell, the cells are mapped and Results shown, cellpose's one-button flow; a
pretraining run becomes the starting model; a cross-validation fills Results; "Evaluate (K repeats)" runs the
fine-tune settings over K seeded splits and Results shows its summary), how a past run is reopened
or resumed. It never touches a widget: it asks for work through ``session.events`` (psygnal signals the
window connects to its job runner, its worker threads and its tabs) and tests drive it without a window
(``tests/ui/test_session.py``).

Requests (``session.events``):
- ``job_requested(JobRequest)``: start a job (the window's ``JobRunner`` does, in a spawned process);
- ``embedding_requested(str)``: read an embed job's ``.h5ad`` onto the open cells (a worker thread);
- ``layout_requested(bool)``: recompute the cell map (True: refine the preview with UMAP);
- ``gene_match_requested()``: compare the data's genes with the (new) model's vocabulary;
- ``step_requested(str)``: show a step ("data", "model", "train", "results", "export");
- ``run_opened(str)``: a past run was reopened or resumed (views reload its curves and log);
- ``message(str, str)``: a log line and its level; ``problem(str, str, str)``: title, message, details.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psygnal import Signal, SignalGroup

from app.data.errors import OmicsLabError
from app.engine.events import Failed, Result
from app.ui.live_map import LiveMap
from app.ui.state import EVAL_TARGET, GP_TARGET, GP_TRAIN_TARGET, SC_TASKS, AppState, RunRecord

EMBED_TARGET = SC_TASKS["embed"][1]
STEPS = ("data", "model", "train", "results", "export")


@dataclass(frozen=True)
class JobRequest:
    """One job to start: exactly what ``app.jobs.process.start_job`` takes, plus what it is for.

    ``purpose``: "train" (the user's run: it is recorded in the run history), "embed-all" (a finished
    fine-tune's model maps every cell), "gp-final" (the chosen GP model on all lines)."""

    target: str
    config: dict[str, Any]
    run_dir: str
    resume: bool = False
    purpose: str = "train"
    kind: str = field(default="")  # the task that made it ("finetune", "compare", ...), for the run record

    @property
    def device(self) -> str:
        """Where the child process starts: CUDA when the config asks for it, else the CPU."""
        return "cuda" if str(self.config.get("device", "")).startswith("cuda") else "cpu"


def kind_of(target: str) -> str:
    """The task a job target belongs to ("finetune", "pretrain", "embed", "gp-cv", ...); else the function's
    name, so an unknown job is never mistaken for a fine-tune."""
    for key, (_, tgt) in SC_TASKS.items():
        if tgt == target:
            return key
    return {GP_TARGET: "gp-cv", GP_TRAIN_TARGET: "gp-train", EVAL_TARGET: "evaluate"}.get(
        target, target.rpartition(":")[2])


class SessionEvents(SignalGroup):
    """What the session asks of the window (see the module docstring)."""

    job_requested = Signal(object)
    embedding_requested = Signal(str)
    layout_requested = Signal(bool)
    gene_match_requested = Signal()
    step_requested = Signal(str)
    run_opened = Signal(str)
    message = Signal(str, str)
    problem = Signal(str, str, str)


class Session:
    """The Qt-free controller of one window: state plus the workflow between jobs."""

    def __init__(self, state: AppState | None = None, runs_root: Callable[[], Path] | None = None,
                 refine_layout: bool = True) -> None:
        self.state = state if state is not None else AppState()
        self.events = SessionEvents()
        self.live = LiveMap()  # the live cell map of the run being trained or reopened
        self.refine_layout = refine_layout
        self.busy = False  # a job is running (set by the job runner through job_started / job_finished)
        self._runs_root = runs_root
        self.state.events.dataset.connect(self._dataset_changed)
        self.state.events.model_dir.connect(self._model_changed)

    # -- small services ----------------------------------------------------------------------------
    def log(self, line: str, level: str = "info") -> None:
        """A line for the log pane."""
        self.events.message.emit(line, level)

    def show_step(self, step: str) -> None:
        """Ask the window to show a step."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; one of {', '.join(STEPS)}")
        self.events.step_requested.emit(step)

    def request_layout(self, refine: bool | None = None) -> None:
        """Recompute the cell map (a PCA preview, then UMAP when ``refine``)."""
        self.events.layout_requested.emit(self.refine_layout if refine is None else bool(refine))

    def _problem(self, title: str, message: str, details: str = "") -> None:
        self.events.problem.emit(title, message, details)

    def runs_root(self) -> Path:
        """Where new run folders go (the user data folder, or ``$OMICSLAB_RUNS_DIR``)."""
        if self._runs_root is not None:
            return Path(self._runs_root())
        from app.engine.run_dir import default_runs_root

        return default_runs_root()

    def new_run_dir(self, name: str) -> str:
        """A fresh run folder path (not created) named after ``name``."""
        from app.engine.run_dir import new_run_name

        return str(self.runs_root() / new_run_name(name))

    # -- reactions to the state ----------------------------------------------------------------------
    def _dataset_changed(self) -> None:
        s = self.state
        if s.kind == "singlecell" and s.layout is None:
            self.request_layout(refine=False)  # a preview map of the data before any model

    def _model_changed(self) -> None:
        if self.state.adata is not None:
            self.events.gene_match_requested.emit()

    # -- starting jobs -------------------------------------------------------------------------------
    def check_ready(self) -> str | None:
        """Why the chosen task cannot start now (a sentence saying what to do), or None."""
        s = self.state
        if s.kind is None:
            return "Open a dataset on the Data tab first."
        if s.kind == "singlecell" and s.task == "finetune" and not s.label_key:
            return ("This dataset has no label column to learn from. Add its cell labels table on the Data tab "
                    "(Add cell labels table…), or choose "
                    "'Embed with a model' or 'Pretrain CellLM' on the Model tab.")
        if s.kind == "genotype" and (s.pheno_path is None or not s.trait):
            return "Add a phenotype table and pick a trait on the Data tab before training."
        return None

    def request(self, req: JobRequest) -> JobRequest:
        """Hand a job to the runner."""
        self.events.job_requested.emit(req)
        return req

    def train(self) -> JobRequest | None:
        """The one button: the chosen task with the chosen settings, in a new run folder."""
        if self.busy:
            return None
        problem = self.check_ready()
        if problem:
            self._problem("Not ready to train", problem)
            return None
        run_dir = self.new_run_dir(self.state.task)
        try:
            target, cfg = self.state.job_spec(run_dir)
        except (ValueError, OmicsLabError) as exc:  # a setting the job's config refuses: say which
            self._problem("Not ready to train", str(exc))
            return None
        req = self.request(JobRequest(target, cfg, run_dir, purpose="train", kind=self.state.task))
        self.show_step("train")  # where its progress, curves and live map are
        return req

    def evaluate(self) -> JobRequest | None:
        """"Evaluate (K repeats)": the fine-tune's settings over K seeded stratified splits with the baseline
        on the same cells (and, when asked, CellLM from random weights and the label-efficiency curve), the
        job ``celllm.evaluate``; Results then shows mean ± SD, the verdict and the curve."""
        if self.busy:
            return None
        problem = self.check_ready()
        if not problem and not (self.state.kind == "singlecell" and self.state.task == "finetune"):
            problem = "Repeated evaluation is for fine-tuning: choose 'Fine-tune CellLM' on the Model tab."
        if problem:
            self._problem("Not ready to evaluate", problem)
            return None
        run_dir = self.new_run_dir("evaluate")
        try:
            target, cfg = self.state.job_spec(run_dir, evaluate=True)
        except (ValueError, OmicsLabError) as exc:
            self._problem("Not ready to evaluate", str(exc))
            return None
        req = self.request(JobRequest(target, cfg, run_dir, purpose="train", kind="evaluate"))
        self.show_step("train")
        return req

    def load_evaluation(self, run_dir: str) -> bool:
        """Show a finished evaluation run folder (its ``metrics.json``; from the window or the CLI's
        ``celllm finetune --repeats``) on the Results tab."""
        from app.ui.evaluation import read_evaluation

        try:
            self.state.evaluation = read_evaluation(run_dir)
        except (OSError, ValueError) as exc:
            self._problem("This folder has no evaluation to show", str(exc))
            return False
        self.log(f"evaluation of {self.state.evaluation.get('repeats', '?')} repeats loaded from {run_dir}")
        self.show_step("results")
        return True

    def resume(self, run_dir: str | None = None) -> JobRequest | None:
        """Continue a stopped run (``run_dir``, else the current one) from its last checkpoint."""
        if self.busy:
            return None
        from app.engine.run_dir import RunDir

        rec = self.state.current
        path = run_dir or (rec.path if rec else None)
        if not path:
            self._problem("Nothing to resume", "Choose a stopped run in the run history.")
            return None
        try:
            rd = RunDir.open(path)
            cfg = rd.read_config()
            target = rd.target or (rec.target if rec else None)
        except Exception as exc:
            self._problem("This run cannot be resumed", str(exc))
            return None
        if not target:
            self._problem("This run cannot be resumed", "Its folder does not say which job made it.")
            return None
        cfg = {k: v for k, v in cfg.items() if k != "resume"}
        self.state.add_run(RunRecord(path=str(path), kind=rd.kind, target=target, config=cfg, status="running"))
        self.events.run_opened.emit(str(path))
        return self.request(JobRequest(target, cfg, str(path), resume=True, purpose="train", kind=rd.kind))

    def train_final(self, model: str) -> JobRequest | None:
        """After a cross-validation: fit ``model`` on every phenotyped line (same data and settings) and
        predict GEBVs of every genotyped line; the model folder can then be exported."""
        rec = self.state.current
        if self.busy or rec is None or rec.target != GP_TARGET:
            self._problem("Cross-validate first", "Run a cross-validation, then train the chosen model on all "
                          "lines.")
            return None
        run_dir = self.new_run_dir(f"gp-train-{model.lower()}")
        from app.engine.jobconfig import field_specs
        from app.engine.registry import by_target

        entry = by_target(GP_TRAIN_TARGET)
        known = {sp.name for sp in field_specs(entry.config)} if entry is not None else set(rec.config)
        # the CV's settings that the final fit also has (folds, repeats, group, ensemble... are the CV's own)
        cfg = {k: v for k, v in rec.config.items() if k in known and k != "run_dir"}
        cfg.update(models=[model], run_dir=run_dir)
        return self.request(JobRequest(GP_TRAIN_TARGET, cfg, run_dir, purpose="gp-final"))

    def embed_all(self, model_dir: str, parent_run: str) -> JobRequest:
        """Apply a model at once: embed (and label) every cell, then map them."""
        run_dir = str(Path(parent_run) / "embed-all")
        cfg = {"data": self.state.data_path, "model": model_dir, "out": str(Path(run_dir) / "embedded.h5ad"),
               "device": self.state.device, "run_dir": run_dir}
        return self.request(JobRequest(EMBED_TARGET, cfg, run_dir, purpose="embed-all"))

    # -- what follows a job ----------------------------------------------------------------------------
    def job_started(self, req: JobRequest) -> None:
        """The runner started ``req``: a user's run enters the run history."""
        self.busy = True
        if req.purpose == "train":
            rec = self.state.current
            if not (req.resume and rec is not None and rec.path == req.run_dir):
                self.state.add_run(RunRecord(path=req.run_dir, kind=req.kind or kind_of(req.target),
                                             target=req.target, config=req.config))

    def job_finished(self, req: JobRequest, final: Result | Failed) -> None:
        """The workflow after a job: record its outcome, then start or show what comes next."""
        self.busy = False
        rec = self.state.current if req.purpose == "train" else None
        if rec is not None and rec.path != req.run_dir:
            rec = None
        if isinstance(final, Failed):
            if rec is not None:
                self.state.update_run(rec, "failed")
            return
        if final.cancelled or final.value.get("cancelled"):
            if rec is not None:
                self.state.update_run(rec, "cancelled")
            return
        if rec is not None:
            self.state.update_run(rec, "done", final.value)
        self._after_success(req, rec, final.value)

    def _after_success(self, req: JobRequest, rec: RunRecord | None, value: dict[str, Any]) -> None:
        s = self.state
        if req.purpose == "embed-all":
            self.events.embedding_requested.emit(str(value.get("out") or ""))
            return
        if req.purpose == "gp-final":
            s.gp_final = value
            self.log(f"final model(s) {', '.join(value.get('models', []))} saved in {value.get('models_dir')}; "
                     f"GEBVs of all {value.get('n_genotyped', '?')} lines in {value.get('gebv_csv')}")
            return
        if rec is None:
            return
        if rec.target == GP_TARGET:
            s.gp_result = value
            self.show_step("results")
        elif rec.target == EVAL_TARGET:
            self.load_evaluation(rec.path)
        elif rec.kind == "finetune":
            self._read_metrics(rec.path)
            self.embed_all(str(Path(rec.path) / "model"), rec.path)
        elif rec.kind == "embed":
            self.events.embedding_requested.emit(str(value.get("out") or ""))
        elif rec.kind == "pretrain" and value.get("model_dir"):
            s.model_dir = str(value["model_dir"])
            self.log("the pretrained model is now the starting model for fine-tuning")

    def embedding_loaded(self) -> None:
        """The cells have their embedding: map them and show Results."""
        self.request_layout()
        self.show_step("results")

    def _read_metrics(self, run_path: str) -> None:
        mpath = Path(run_path) / "metrics.json"
        if mpath.is_file():
            self.state.metrics = json.loads(mpath.read_text())

    # -- the run history -----------------------------------------------------------------------------
    def reopen(self, path: str) -> bool:
        """Show a past run: its record, scores and (when it embedded the cells) its map."""
        from app.engine.run_dir import RunDir

        try:
            rd = RunDir.open(path)
        except Exception as exc:
            self._problem("This run cannot be opened", str(exc))
            return False
        rec = RunRecord(path=str(path), kind=rd.kind, target=rd.target or "", config=rd.read_config(),
                        status=rd.status, result=rd.read_result())
        self.state.add_run(rec)
        self.events.run_opened.emit(str(path))
        if rec.target == GP_TARGET and rec.result:
            self.state.gp_result = rec.result
        if rec.target == EVAL_TARGET:  # its metrics.json is the summary over repeats, not one split's scores
            return rec.status != "done" or self.load_evaluation(path)
        self._read_metrics(path)
        emb = Path(path) / "embed-all" / "embedded.h5ad"
        if emb.is_file() and self.state.adata is not None:
            self.events.embedding_requested.emit(str(emb))
        return True


__all__ = ["EMBED_TARGET", "STEPS", "JobRequest", "Session", "SessionEvents", "kind_of"]
