"""``bench annotate``: fine-tuning settings pass through ``--option KEY=VALUE`` into every fine-tune it runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from app.bench import annotate


def test_option_parses_json_values_and_text() -> None:
    assert annotate._option("readout=cls+linear") == ("readout", "cls+linear")
    assert annotate._option("linear_lr=1e-5") == ("linear_lr", 1e-5)
    assert annotate._option("lr=null") == ("lr", None)
    with pytest.raises(argparse.ArgumentTypeError):
        annotate._option("readout")


@pytest.mark.shared_data
def test_bench_annotate_passes_options_to_fine_tuning(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    """With readout=cls+linear from the baseline and 1 epoch on a saturated set, CellLM is at the baseline."""
    rc = annotate.main(["--json", "--datasets", "cellbench_dropseq", "--seeds", "1", "--epochs", "1",
                        "--no-scratch", "--no-celltypist", "--shared", str(shared_data),
                        "--option", "readout=cls+linear"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"] == {"readout": "cls+linear"}
    (res,) = out["results"]
    assert set(res["methods"]) == {"celllm", "baseline"}
    assert len(res["best_epochs"]["celllm"]) == 1 and 0 <= res["best_epochs"]["celllm"][0] <= 1
    assert res["per_seed"]["celllm"]["macro_f1"][0] >= res["per_seed"]["baseline"]["macro_f1"][0] - 0.05
    with pytest.raises(SystemExit):
        annotate.main(["--option", "nokey"])


@pytest.mark.shared_data
def test_bench_annotate_scores_the_encoder_alone(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    """--encoder-alone adds readout-cls runs, pretrained and from scratch, with their paired difference; they
    are fine-tuned from their own start (not the baseline's fit), so their best epoch is at least 1."""
    rc = annotate.main(["--json", "--datasets", "cellbench_dropseq", "--seeds", "2", "--epochs", "1",
                        "--no-scratch", "--no-celltypist", "--encoder-alone", "--shared", str(shared_data)])
    assert rc == 0
    (res,) = json.loads(capsys.readouterr().out)["results"]
    assert set(res["methods"]) == {"celllm", "baseline", "encoder", "encoder_scratch"}
    assert len(res["per_seed"]["encoder"]["macro_f1"]) == len(res["per_seed"]["baseline"]["macro_f1"]) == 2
    assert res["best_epochs"]["encoder"] == [1, 1] and res["best_epochs"]["encoder_scratch"] == [1, 1]
    d = res["differences"]["encoder_minus_encoder_scratch"]["macro_f1"]
    per = res["per_seed"]
    assert d["mean"] == pytest.approx(np.mean(np.subtract(per["encoder"]["macro_f1"],
                                                          per["encoder_scratch"]["macro_f1"])))
    assert "encoder alone" in annotate.table([res])
