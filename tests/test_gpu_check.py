"""scripts/gpu_check.py on the CPU: every check but the CUDA ones runs the code a GPU machine
runs (training steps through the trainer, two gloo processes through DDP, the predictor on the
device versus the CPU), and the summary holds each check's fields."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_reports_every_check(tmp_path):
    out = tmp_path / "summary.json"
    env = dict(os.environ, EXPS_PATH=str(tmp_path / "exps"), IGLR_NUMBA="0")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--ddp",
         "--crop", "32", "--image-size", "64", "--clicks", "2", "--steps", "2",
         "--batch-size", "2", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary  # the one summary line
    assert summary["ok"] is True and summary["device"] == "cpu"
    checks = summary["checks"]
    assert list(checks) == ["torch", "train", "ddp", "eval_click", "per_click"]
    assert checks["torch"]["ok"] and checks["torch"]["minimum"] == "2.4"
    train = checks["train"]
    assert train["ok"] and train["amp"] is False and train["skipped_steps"] == 0
    assert len(train["losses"]) == 2 and train["s_per_step"] > 0
    ddp = checks["ddp"]
    assert ddp["ok"] and ddp["backend"] == "gloo" and ddp["world_size"] == 2
    assert ddp["max_weight_diff_between_ranks"] == 0.0
    click = checks["eval_click"]
    assert click["ok"] and click["max_abs_diff"] == 0.0 and click["shape"] == [64, 64]
    assert click["iou_cpu"] == click["iou_device"]
    per_click = checks["per_click"]
    assert per_click["ok"] and per_click["clicks"] == 2 and per_click["s_per_click"] > 0
    assert "gpu_check: PASS on cpu" in proc.stderr and not (tmp_path / "exps").exists()


def test_gpu_check_without_cuda_is_one_line(tmp_path):
    import importlib.util
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    spec = importlib.util.spec_from_file_location("script_gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cuda"]) == 2
