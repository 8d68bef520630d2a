"""scripts/benchmark.py --quick runs end to end and writes every field of its JSON."""
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("target_crop", "backbone", "head", "coarse_other", "coarse_paste", "focus_crop",
          "roi_sampling", "refiner", "paste_back")


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_benchmark_quick_writes_every_field(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick",
                           "--devices", "cpu", "--json", str(out_json), "--markdown",
                           str(out_md)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert set(result) >= {"conventions", "settings", "rows", "training", "environment"}
    assert {"flops", "floor", "time", "stages", "memory_cpu"} <= set(result["conventions"])
    assert {"torch", "cpu_count", "load_before", "load_after"} <= set(result["environment"])
    rows = result["rows"]
    assert [(r["refiner"], r["iga"]) for r in rows] == [(True, True), (False, True)]
    for row in rows:
        assert row["model"] == "B0-S2" and row["device"] == "cpu" and row["dtype"] == "fp32"
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
    train = result["training"]
    assert train["batch_size"] == 2 and train["data_samples_per_s"] > 0
    assert train["models"]["B0-S2"]["samples_per_s"] > 0
    text = out_md.read_text()
    assert "| B0-S2 | on | on | cpu | fp32 |" in text and "Training" in text


def test_benchmark_with_a_checkpoint_times_that_architecture_only(tmp_path):
    """--checkpoint: one row, labelled with the checkpoint's architecture (not every variant
    with the checkpoint's weights under other names)."""
    from isegm.model import IGLRModel, save_is_model
    ckpt = tmp_path / "noiga_nolrr.pth"
    save_is_model(IGLRModel(backbone="mit_b0", pipeline="s2", infer_size=64, refine_size=32,
                            iga_stages=(), use_refiner=False), ckpt)
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick",
                           "--devices", "cpu", "--checkpoint", str(ckpt), "--no-train",
                           "--no-full-image", "--json", str(out_json), "--markdown",
                           str(tmp_path / "bench.md")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["model"], r["iga"], r["refiner"]) for r in rows] == [("B0-S2", False, False)]
