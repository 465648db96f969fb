"""The job registry: each engine job's name -> its function (as an importable target), config type and
result type. The CLI, the window and the jobs layer look jobs up here instead of writing target strings.

Configs and the registry are light to import (no torch): ``entry.function()`` imports the job module only
when the job runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.data.errors import OmicsLabError
from app.engine.celllm.job_configs import (
    AnnotateConfig,
    EmbedConfig,
    EvaluateConfig,
    FinetuneConfig,
    PretrainConfig,
)
from app.engine.gp.job_configs import GPCVConfig, GPPredictConfig, GPTrainConfig
from app.engine.jobconfig import JobConfig
from app.engine.results import (
    AnnotateResult,
    EmbedResult,
    EvaluateResult,
    FinetuneResult,
    GPCVResult,
    GPPredictResult,
    GPTrainResult,
    JobResult,
    PretrainResult,
)


@dataclass(frozen=True)
class JobEntry:
    """One job: ``name`` (``celllm.finetune``), ``target`` (``package.module:function``, what a spawned job
    process imports), its config type and its result type (``result.from_dict`` reads a finished run's
    result.json back as the typed result)."""

    name: str
    target: str
    config: type[JobConfig]
    result: type[JobResult] = JobResult
    title: str = ""

    def function(self) -> Callable[..., Any]:
        """The job function (imports its module)."""
        mod, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(mod), fn)

    def make_config(self, values: dict[str, Any] | None, where: str | None = None) -> JobConfig:
        """A validated config of this job from untyped values."""
        return self.config.from_dict(values, where)

    def read_result(self, values: dict[str, Any] | None) -> JobResult:
        """The typed result from its JSON form (a finished run's result.json, a job's Result event)."""
        return self.result.from_dict(values)


JOBS: dict[str, JobEntry] = {e.name: e for e in (
    JobEntry("celllm.finetune", "app.engine.celllm.finetune:finetune", FinetuneConfig, FinetuneResult,
             "Fine-tune CellLM"),
    JobEntry("celllm.evaluate", "app.engine.celllm.evaluate:evaluate_repeats", EvaluateConfig, EvaluateResult,
             "Evaluate CellLM over repeated splits"),
    JobEntry("celllm.pretrain", "app.engine.celllm.pretrain:pretrain", PretrainConfig, PretrainResult,
             "Pretrain CellLM"),
    JobEntry("celllm.embed", "app.engine.celllm.embed:embed", EmbedConfig, EmbedResult, "Embed with a model"),
    JobEntry("celllm.annotate", "app.engine.celllm.annotate:annotate", AnnotateConfig, AnnotateResult,
             "Annotate with a fine-tuned model"),
    JobEntry("gp.cv", "app.engine.gp.jobs:cv", GPCVConfig, GPCVResult, "Cross-validate"),
    JobEntry("gp.train", "app.engine.gp.jobs:train", GPTrainConfig, GPTrainResult, "Train on all lines"),
    JobEntry("gp.predict", "app.engine.gp.jobs:predict", GPPredictConfig, GPPredictResult, "Predict new lines"),
)}


def job(name: str) -> JobEntry:
    """The registered job called ``name``."""
    try:
        return JOBS[name]
    except KeyError:
        raise OmicsLabError(f"unknown job {name!r}; known jobs: {', '.join(JOBS)}") from None


def by_target(target: str) -> JobEntry | None:
    """The registered job whose function is ``target`` (None for jobs outside the registry, e.g. test jobs)."""
    return next((e for e in JOBS.values() if e.target == target), None)


__all__ = ["JOBS", "JobEntry", "by_target", "job"]
