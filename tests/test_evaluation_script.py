"""scripts/evaluate_model.py end to end, and its errors before any evaluation starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isegm.inference.runner import EvaluationSetupError, load_ious, parse_args, run_evaluation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def b0_checkpoint(tmp_path_factory):
    from isegm.model import IGLRModel, save_is_model
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    save_is_model(IGLRModel("mit_b0", infer_size=128, refine_size=128), folder / "b0_fresh.pth")
    return folder / "b0_fresh.pth"


@pytest.fixture
def env(monkeypatch, grabcut_root, tmp_path):
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    return tmp_path


def test_full_script_writes_every_output(env, b0_checkpoint, monkeypatch):
    """The paper README's command line (plus size limits) on two GrabCut images, on CPU."""
    monkeypatch.setenv("INTERACTIVE_MODELS_PATH", str(b0_checkpoint.parent))
    logs = env / "logs"
    cmd = [sys.executable, str(REPO / "scripts" / "evaluate_model.py"), "NoBRS", "--gpu=0",
           "--checkpoint=b0_fresh", "--eval-mode=cvpr", "--datasets=GrabCut", "--max-samples=2",
           "--n-clicks=3", "--infer-size=128", f"--logs-path={logs}", "--vis-preds", "--save-ious",
           "--iou-analysis"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NoC@85%" in proc.stdout and "GrabCut" in proc.stdout and "iglr" in proc.stdout
    out = logs / "b0_fresh"
    stem = "results_NoBRS_cvpr_3"
    assert "NoC@90%" in (out / f"{stem}.txt").read_text()
    csv_lines = (out / f"{stem}.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 2 and csv_lines[0].startswith("date,model,checkpoint")
    records = json.loads((out / f"{stem}.json").read_text())
    assert len(records) == 1 and records[0]["num_samples"] == 2 and records[0]["clicks"] == 6
    assert records[0]["NoC@90"] == 3.0 and records[0]["NoF@90"] == 2  # random weights fail
    assert len(records[0]["mIoU_per_click"]) == 3
    saved = load_ious(out / "ious" / "GrabCut_b0_fresh_iglr_cvpr.npz")
    assert len(saved["all_ious"]) == 2 and all(len(x) == 3 for x in saved["all_ious"])
    assert saved["sample_ids"] == ["106024", "124080"] and saved["meta"]["dataset"] == "GrabCut"
    assert (out / "ious" / "GrabCut_b0_fresh_iglr_cvpr.pkl").is_file()
    vis = sorted((out / "vis" / "b0_fresh" / "GrabCut").glob("*.jpg"))
    assert len(vis) == 6 and vis[0].name == "106024_01.jpg"
    assert "CUDA is not available" in proc.stderr or torch.cuda.is_available()


def test_oracle_row_through_run_evaluation(env):
    records = run_evaluation(parse_args(["oracle", "--datasets=GrabCut", "--max-samples=3",
                                         f"--logs-path={env / 'logs'}"]))
    assert records[0]["NoC@85"] == 1.0 and records[0]["NoF@90"] == 0
    records = run_evaluation(parse_args(["empty", "--datasets=GrabCut", "--max-samples=2",
                                         "--n-clicks=4", f"--logs-path={env / 'logs'}"]))
    assert records[0]["NoC@90"] == 4.0 and records[0]["NoF@85"] == 2
    # results are appended, not overwritten
    assert len(json.loads((env / "logs" / "empty" / "results_empty_cvpr_4.json").read_text())) == 1


def _error(argv, match):
    with pytest.raises(EvaluationSetupError, match=match):
        run_evaluation(parse_args(argv))


def test_errors_before_evaluation(env, b0_checkpoint, monkeypatch):
    logs = f"--logs-path={env / 'logs'}"
    ck = f"--checkpoint={b0_checkpoint}"
    _error(["NoBRS", ck, "--datasets=GrabCut,Nope", logs],
           r"unknown dataset\(s\) Nope; known: GrabCut, Berkeley, DAVIS, SBD")
    _error(["fBRS", ck, "--datasets=GrabCut", logs],
           "unknown mode or predictor 'fBRS'; known: NoBRS, coarse, cv_grabcut, empty, iglr")
    _error(["NoBRS", "--checkpoint=missing_model", "--datasets=GrabCut", logs],
           "checkpoint 'missing_model' not found")
    foreign = env / "foreign.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    _error(["NoBRS", f"--checkpoint={foreign}", "--datasets=GrabCut", logs],
           "is not an IGLR model checkpoint")
    monkeypatch.setenv("DAVIS_PATH", str(env / "no_davis"))
    _error(["NoBRS", ck, "--datasets=GrabCut,DAVIS", logs], "dataset DAVIS: DAVIS_PATH resolves to")
    blocker = env / "a_file"
    blocker.write_text("x")
    _error(["NoBRS", ck, "--datasets=GrabCut", f"--logs-path={blocker / 'sub'}"],
           "cannot be written")
    _error(["NoBRS", ck, "--datasets=GrabCut", "--eval-mode=fast", logs], "fixed<S>")
    _error(["NoBRS", "--datasets=GrabCut", logs], "needs --checkpoint or --exp-path")
    assert not (env / "logs").exists()  # nothing evaluated, nothing written


def test_exp_path_and_main_exit_code(env, b0_checkpoint, capsys):
    from isegm.inference.runner import find_exp_checkpoints, main
    from isegm.utils.config import load_config
    run = env / "exps" / "iglr" / "b0_test" / "000_demo" / "checkpoints"
    run.mkdir(parents=True)
    for name in ("010.pth", "last_checkpoint.pth"):
        (run / name).write_bytes(b0_checkpoint.read_bytes())
    found = find_exp_checkpoints(load_config(), "iglr/b0_test/000")
    assert [p.name for p in found] == ["010.pth", "last_checkpoint.pth"]
    assert main(["NoBRS", "--exp-path=iglr/b0_test/999", "--datasets=GrabCut"]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_plot_ious_analysis(env):
    logs = env / "logs"
    for mode in ("oracle", "empty"):
        run_evaluation(parse_args([mode, "--datasets=GrabCut", "--max-samples=2", "--n-clicks=5",
                                   "--iou-analysis", f"--logs-path={logs}"]))
    output = env / "curves.png"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_ious_analysis.py"),
                           f"--folder={logs}", f"--output={output}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert output.stat().st_size > 5000 and output.read_bytes()[:4] == b"\x89PNG"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_ious_analysis.py"),
                           f"--files={env / 'none.npz'}", f"--output={output}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_flip_flags_parse():
    from isegm.inference.runner import parse_args
    assert parse_args(["NoBRS", "--checkpoint=x.pth"]).with_flip is True
    assert parse_args(["NoBRS", "--checkpoint=x.pth", "--no-flip"]).with_flip is False
    assert parse_args(["NoBRS", "--checkpoint=x.pth", "--no-with-flip"]).with_flip is False
    assert parse_args(["NoBRS", "--checkpoint=x.pth", "--with-flip"]).with_flip is True


def test_inspect_clicks_reports_every_click_and_the_iga_coefficients(tmp_path, capsys):
    import importlib.util
    import re

    import torch

    from isegm.model import IGLRModel, save_is_model
    torch.manual_seed(0)
    model = IGLRModel(backbone="mit_b0", pipeline="s2", infer_size=64, refine_size=32)
    with torch.no_grad():
        model.backbone.block1[0].attn.iga_pos.fill_(0.5)
    ckpt = tmp_path / "m.pth"
    save_is_model(model, ckpt)
    path = Path(__file__).resolve().parents[1] / "scripts" / "inspect_clicks.py"
    spec = importlib.util.spec_from_file_location("inspect_clicks", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    try:
        assert script.main(["--checkpoint", str(ckpt), "--dataset", "Synthetic", "--samples",
                            "2", "--clicks", "3", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)\s+([\d.]+) \(median\)\s+([\d.]+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    assert float(rows[0][3]) == 1.0  # the first click sees the whole image
    assert "Synthetic, 2 objects, 3 clicks" in out
    stages = re.findall(r"stage(\d): mean \|coefficient\|  pos ([\d.]+)", out)
    assert [s[0] for s in stages] == ["1", "2", "3", "4"]
    assert float(stages[0][1]) == pytest.approx(0.25, abs=1e-3)  # 0.5 in one of two blocks
    assert script.main(["--checkpoint", str(tmp_path / "missing.pth"), "--dataset",
                        "Synthetic"]) == 2
    assert "missing.pth" in capsys.readouterr().err
