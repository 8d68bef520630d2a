"""scripts/evaluate_model.py end to end, and its errors before any evaluation starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isegm.inference.cli import EvaluationSetupError, parse_args, run_evaluation
from isegm.inference.results import load_ious

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
    from isegm.inference.cli import find_exp_checkpoints, main
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
    from isegm.inference.cli import parse_args
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
    stages = re.findall(r"block(\d): mean \|coefficient\|  pos ([\d.]+)", out)
    assert [s[0] for s in stages] == ["1", "2", "3", "4"]
    assert float(stages[0][1]) == pytest.approx(0.25, abs=1e-3)  # 0.5 in one of two blocks
    assert script.main(["--checkpoint", str(tmp_path / "missing.pth"), "--dataset",
                        "Synthetic"]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_results_writer_appends_and_replaces(tmp_path, caplog):
    """`write_records`: the evaluator's appending form grows the text, the CSV (one header) and
    the JSON list; the jobs' form replaces all three; a broken JSON file is replaced with a
    warning; floats are rounded in the CSV only when asked."""
    import csv
    import json
    from isegm.inference.results import write_records
    stem = tmp_path / "out" / "results"
    rows = [{"model": "a", "NoC@90": 1.23456789, "extra": "not a column"}]
    paths = write_records(stem, rows, ["model", "NoC@90"], "table 1\n", append=True)
    write_records(stem, [{"model": "b", "NoC@90": 2.0}], ["model", "NoC@90"], "table 2\n",
                  append=True)
    assert paths["text"].read_text() == "table 1\ntable 2\n"
    with open(paths["csv"], newline="") as f:
        assert list(csv.reader(f)) == [["model", "NoC@90"], ["a", "1.23456789"], ["b", "2.0"]]
    assert [r["model"] for r in json.loads(paths["json"].read_text())] == ["a", "b"]
    assert json.loads(paths["json"].read_text())[0]["extra"] == "not a column"
    paths["json"].write_text("{broken")
    write_records(stem, rows, ["model"], "t\n", append=True)
    assert "not valid JSON" in caplog.text
    assert len(json.loads(paths["json"].read_text())) == 1
    paths = write_records(stem, rows, ["model", "NoC@90"], "# md\n", text_suffix=".md",
                          csv_digits=2)
    assert paths["text"].suffix == ".md" and paths["text"].read_text() == "# md\n"
    with open(paths["csv"], newline="") as f:
        assert list(csv.reader(f)) == [["model", "NoC@90"], ["a", "1.23"]]
    assert not list((tmp_path / "out").glob("*.tmp"))  # written through renamed temporaries


def test_draw_prediction_marks_mask_contour_and_clicks():
    """One drawing module: the mask blended in, the ground-truth contour, the clicks in their
    colours with a white rim (the same `draw_click` as the training dumps)."""
    import numpy as np
    from isegm.inference.clicker import Click
    from isegm.utils.vis import (GT_CONTOUR_COLOR, NEGATIVE_COLOR, POSITIVE_COLOR, draw_points,
                                 draw_prediction)
    image = np.full((60, 80, 3), 100, np.uint8)
    probs = np.zeros((60, 80), np.float32)
    probs[10:30, 10:30] = 0.9
    gt = np.zeros((60, 80), np.int32)
    gt[40:55, 50:75] = 1
    clicks = [Click(True, (20, 20), 0), Click(False, (50, 10), 1)]
    out = draw_prediction(image, probs, clicks, 0.49, gt)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert tuple(out[20, 20]) == POSITIVE_COLOR and tuple(out[50, 10]) == NEGATIVE_COLOR
    assert tuple(out[12, 27]) == (55, 109, 169)  # 0.55 * 100 + 0.45 * (0, 120, 255), floored
    assert tuple(out[40, 60]) == GT_CONTOUR_COLOR and tuple(out[2, 70]) == (100, 100, 100)
    points = np.array([[20, 20, 0], [-1, -1, -1], [50, 10, 1], [-1, -1, -1]], np.float32)
    drawn = draw_points(image, points, radius=3)
    assert tuple(drawn[20, 20]) == POSITIVE_COLOR and tuple(drawn[50, 10]) == NEGATIVE_COLOR
    assert tuple(drawn[23, 20]) == (255, 255, 255)  # the rim
