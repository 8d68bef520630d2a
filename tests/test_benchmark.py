"""scripts/benchmark.py: every subcommand runs end to end at tiny size and writes its JSON."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("target_crop", "backbone", "head", "coarse_other", "coarse_paste", "focus_crop",
          "roi_sampling", "refiner", "paste_back")


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def _run(tmp_path, *args, env=None):
    """Run `benchmark.py <args> --json <tmp>/bench.json`; returns the JSON it wrote."""
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *args,
                           "--threads", "1", "--json", str(out_json)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out_json.read_text()), proc.stdout


def test_benchmark_predictor_quick_writes_every_field(tmp_path):
    out_md = tmp_path / "bench.md"
    result, _ = _run(tmp_path, "predictor", "--quick", "--devices", "cpu", "--markdown",
                     str(out_md))
    assert set(result) >= {"conventions", "settings", "rows", "environment"}
    assert {"flops", "floor", "time", "stages", "memory_cpu"} <= set(result["conventions"])
    assert {"torch", "cpu_count", "load_before", "load_after"} <= set(result["environment"])
    rows = result["rows"]
    assert [(r["refiner"], r["iga"]) for r in rows] == [(True, True), (False, True)]
    for row in rows:
        assert row["model"] == "B0-S2" and row["device"] == "cpu" and row["dtype"] == "fp32"
        assert row["backend"] == "torch"
        assert 3.0 < row["params_m"] < 5.0
        assert 1.0 < row["gflop_per_click"] < 5.0  # coarse 1.3 (+ refiner 0.7) GFLOP
        (size, entry), = row["sizes"].items()
        assert size == "120x160"
        for key in ("median", "p25", "p75", "min", "max"):
            assert _finite(entry["per_click_ms"][key]) and entry["per_click_ms"][key] > 0
        assert entry["per_click_ms"]["n"] == 3
        assert entry["per_click_ms"]["min"] <= entry["per_click_ms"]["median"] \
            <= entry["per_click_ms"]["max"]
        assert set(entry["stages_ms"]) == set(STAGES)
        assert entry["stages_ms"]["backbone"]["median"] > 0
        assert entry["stages_ms"]["head"]["median"] > 0
        refiner_ms = entry["stages_ms"]["refiner"]["median"]
        assert (refiner_ms > 0) == row["refiner"]
        stage_sum = sum(entry["stages_ms"][s]["median"] for s in STAGES)
        assert stage_sum <= 1.05 * entry["per_click_ms"]["max"]
        for key in ("evaluator_overhead_fraction", "peak_memory_mb", "floor_ms", "x_floor",
                    "achieved_gflops"):
            assert _finite(entry[key]), key
        assert entry["floor_ms"] == row["gflop_per_click"] / 166.0 * 1000.0
        if row["refiner"]:  # the full-image reference once per model
            full = entry["full_image"]
            assert full["measured"] is True and full["gflop"] > 0
            assert _finite(full["ms"]["median"]) and _finite(full["floor_ms"])
        else:
            assert "full_image" not in entry
    text = out_md.read_text()
    assert "| B0-S2 | on | on | cpu | torch | fp32 |" in text and text == result["text"]


def test_benchmark_with_a_checkpoint_times_that_architecture_only(tmp_path):
    """--checkpoint: one row, labelled with the checkpoint's architecture (not every variant
    with the checkpoint's weights under other names)."""
    from isegm.model import IGLRModel, save_is_model
    ckpt = tmp_path / "noiga_nolrr.pth"
    save_is_model(IGLRModel(backbone="mit_b0", pipeline="s2", infer_size=64, refine_size=32,
                            iga_stages=(), use_refiner=False), ckpt)
    result, _ = _run(tmp_path, "predictor", "--quick", "--devices", "cpu", "--checkpoint",
                     str(ckpt), "--no-full-image", "--markdown", str(tmp_path / "bench.md"))
    rows = result["rows"]
    assert [(r["model"], r["iga"], r["refiner"]) for r in rows] == [("B0-S2", False, False)]


def test_benchmark_network_times_both_iga_settings(tmp_path):
    result, stdout = _run(tmp_path, "network", "--variants", "mit_b0", "--size", "64",
                          "--runs", "1")
    rows = result["rows"]
    assert [(r["model"], r["iga"]) for r in rows] == [("B0-S2", True), ("B0-S2", False)]
    for r in rows:
        assert 0 < r["refine_gflop"] < r["coarse_gflop"] < 1.0  # 64x64: a sixteenth of 256x256
        for key in ("coarse_ms", "refine_ms", "roi_ms"):
            assert r[key]["min"] <= r[key]["median"] <= r[key]["max"] and r[key]["min"] > 0
    assert "| B0-S2 | on |" in stdout


def test_benchmark_evaluator_splits_the_seconds_per_click(tmp_path, grabcut_root):
    result, _ = _run(tmp_path, "evaluator", "--backbones", "mit_b0", "--samples", "1",
                     "--clicks", "2", "--size", "64", "--classical-samples", "1",
                     env={"GRABCUT_PATH": str(grabcut_root)})
    (row,) = result["timing"]
    assert row["clicks"] == 2
    parts = ("model_s_per_click", "roi_sampling_s_per_click", "predictor_overhead_s_per_click",
             "simulator_iou_s_per_click", "other_s_per_click")
    assert abs(sum(row[k] for k in parts) - row["total_s_per_click"]) < 1e-9
    assert row["model_s_per_click"] > 0 and 0 < row["overhead_fraction"] < 1
    assert result["classical"]["num_samples"] == 1 and result["classical"]["NoC@90"] >= 1


def test_benchmark_training_times_the_trainers_own_step(tmp_path):
    """The trainer's real step (the study's recipe: clipping on) as its own epoch loop times it."""
    result, stdout = _run(tmp_path, "training", "--backbones", "mit_b0", "--batch-size", "2",
                          "--crop", "64", "--steps", "2", "--warmup-epochs", "0")
    (row,) = result["rows"]
    assert row["model"] == "B0-S2" and row["clip_grad_norm"] == 1.0
    assert row["step_s"] > 0 and row["data_s"] > 0 and _finite(row["loss"])
    assert row["samples_per_s"] == 2 / (row["step_s"] + row["data_s"])
    assert "ISTrainer.train_step" in stdout


def test_benchmark_data_pipeline(tmp_path):
    result, _ = _run(tmp_path, "data", "--items", "4", "--batch-size", "2", "--crop", "64",
                     "--workers", "0")
    (row,) = result["rows"]
    assert row["workers"] == 0 and row["samples_per_s"] > 0


def test_benchmark_writes_under_experiments_by_default():
    """Without --json the outputs go under the repository's git-ignored experiments/ folder."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUTPUT_DIR == REPO / "experiments" / "benchmark"
