"""The main job and the ablation runner in reduced form: every promised output exists and is well
formed; the CPU study configs differ from their base only in the model; budgets and errors."""
import csv
import dataclasses
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import pytest
import torch

from isegm.engine import recipe
from isegm.engine.launch import load_config_module
from isegm.engine.runconfig import RunConfig
from isegm.jobs.training import Budget, BudgetError, budgeted_recipe
from isegm.utils.config import load_config
from isegm.utils.log import setup_logging

REPO = Path(__file__).resolve().parents[1]
SHARED_GRABCUT = Path(os.environ.get("IGLR_TEST_DATASETS", REPO.parent / "shared" / "datasets")) / "GrabCut"
JOB_CONFIGS = REPO / "tests" / "jobs_configs"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _timeless(row):
    """A table row without its timing columns."""
    return {k: v for k, v in row.items() if not k.startswith("s_per_click")}


def _markdown_rows(path):
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[1:]]


@pytest.fixture
def exps(tmp_path, monkeypatch):
    """A fresh EXPS_PATH; the scripts run with one torch thread (`--threads 1`: the cores are
    shared), restored afterwards."""
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    threads = torch.get_num_threads()
    yield tmp_path / "exps"
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_main_job_quick_writes_every_promised_output(exps, monkeypatch, capsys):
    with_grabcut = SHARED_GRABCUT.is_dir()
    monkeypatch.setenv("GRABCUT_PATH", str(SHARED_GRABCUT if with_grabcut else exps / "no_grabcut"))
    assert _script("main_job").main(["--quick", "--seed", "3", "--threads", "1"]) == 0
    printed = capsys.readouterr().out

    root = exps / "iglr_cpu" / "segformerB0_S2_synthetic" / "000_main_job"
    out = root / "evaluation"
    datasets = ["Synthetic", "GrabCut"] if with_grabcut else ["Synthetic"]
    # The printed paths are the real ones.
    for label in ("experiment folder", "checkpoint", "mIoU-vs-clicks", "visualisations",
                  "training log"):
        match = re.search(rf"^{label}\s+: (\S+)", printed, re.M)
        assert match and Path(match.group(1)).exists(), label
    assert f"NoC table         : {out / 'noc_table.md'}" in printed

    # Table: markdown, CSV and JSON agree; NoC within [1, N] (N = 6 clicks in --quick).
    md = _markdown_rows(out / "noc_table.md")
    rows = _read_csv(out / "noc_table.csv")
    records = json.loads((out / "noc_table.json").read_text())
    expected = [(m, d) for d in datasets for m in ("untrained", "trained")]
    assert [(r["Model"], r["Dataset"]) for r in md] == expected
    assert [(r["model"], r["dataset"]) for r in rows] == expected
    assert list(md[0])[4:] == ["NoC@80", "NoC@85", "NoC@90", "NoF@90", "mIoU@1", "mIoU@3", "mIoU@5"]
    for r, m, rec in zip(rows, md, records):
        assert int(r["num_samples"]) == 3 and r["seeds"] == "1"
        for key in ("NoC@80", "NoC@85", "NoC@90"):
            assert 1.0 <= float(r[key]) <= 6.0 <= 20
        assert 0 <= int(float(r["NoF@90"])) <= 3
        for key in ("mIoU@1", "mIoU@3", "mIoU@5"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(m["NoC@90"]) == pytest.approx(float(r["NoC@90"]), abs=0.006)
        assert float(m["mIoU@3"]) == pytest.approx(float(r["mIoU@3"]), abs=6e-4)
        assert len(rec["mIoU_curve"]) == 6 and rec["mIoU_curve"][2] == pytest.approx(float(r["mIoU@3"]))

    # Figure: one 500x400 panel per dataset.
    plot = cv2.imread(str(out / "miou_vs_clicks.png"))
    assert plot is not None and plot.shape == (400, 500 * len(datasets), 3)

    # Visualisations: 2 per dataset, 4 panels each (after clicks 1, 3, 5 and 6).
    for name in datasets:
        files = sorted((out / "vis").glob(f"{name}_trained_*.png"))
        assert len(files) == 2
        image = cv2.imread(str(files[0]))
        assert image is not None and image.shape[0] >= 128
        assert image.shape[1] % 4 == 0 and image.shape[1] >= 4 * 128

    # Training record and a checkpoint that rebuilds the model alone.
    assert (root / "segformerB0_S2_synthetic.py").is_file() and (root / "config.yml").is_file()
    log = (root / "train_log.txt").read_text()
    assert "trained 4 steps" in log
    # precise BN after each of the 2 epochs (--quick: 2 steps per epoch, batch 4)
    assert log.count("BatchNorm statistics recomputed on 2 training batches") == 2
    from isegm.model import load_is_model
    model = load_is_model(root / "checkpoints" / "last_checkpoint.pth")
    assert model.use_refiner and model.infer_size == 96 and model.refine_size == 64


@pytest.mark.slow
def test_run_ablation_compares_configs_over_seeds(exps, capsys):
    out = exps / "cmp"
    argv = [str(JOB_CONFIGS / "tiny_full.py"), str(JOB_CONFIGS / "tiny_noiga_nolrr.py"),
            "--minutes", "0.001", "--epoch-steps", "2", "--seeds", "0", "1",
            "--datasets", "Synthetic", "--eval-samples", "2", "--n-clicks", "4",
            "--references", "untrained", "cv_grabcut", "--output", str(out), "--threads", "1"]
    assert _script("run_ablation").main(argv) == 0
    rows = _read_csv(out / "ablation_table.csv")
    assert [r["model"] for r in rows] == ["tiny_full", "untrained", "tiny_noiga_nolrr",
                                          "OpenCV GrabCut"]
    assert [r["seeds"] for r in rows] == ["2", "2", "2", "1"]
    for r in rows:
        assert r["dataset"] == "Synthetic" and r["num_samples"] == "2"
        assert 1.0 <= float(r["NoC@85"]) <= float(r["NoC@90"]) <= 4.0
        assert float(r["NoC@90_std"]) >= 0.0 and 0.0 <= float(r["mIoU@1"]) <= 1.0
    md = (out / "ablation_table.md").read_text()
    assert "| tiny_noiga_nolrr | Synthetic | 2 | 2 |" in md and " ± " in md
    assert all(c in md for c in ("NoC@85", "NoC@90", "NoF@90", "mIoU@1", "mIoU@3", "mIoU@5"))
    plot = cv2.imread(str(out / "miou_vs_clicks.png"))
    assert plot is not None and plot.shape == (400, 500, 3)
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert [(Path(r["config"]).stem, r["seed"]) for r in runs] == [
        ("tiny_full", 0), ("tiny_full", 1), ("tiny_noiga_nolrr", 0), ("tiny_noiga_nolrr", 1)]
    for r in runs:  # the time budget stops after the first epoch of 2 steps
        assert r["steps"] == 2 and r["epochs"] == 1 and Path(r["checkpoint"]).is_file()
    assert "comparison table" in capsys.readouterr().out

    # --reevaluate: the listed checkpoints evaluated again (the untrained network rebuilt from
    # each seed) give the same IoU series, row for row
    again = exps / "again"
    assert _script("run_ablation").main([
        "--reevaluate", str(out), "--datasets", "Synthetic", "--eval-samples", "2",
        "--n-clicks", "4", "--references", "untrained", "cv_grabcut", "--output", str(again),
        "--threads", "1"]) == 0
    first, second = (json.loads((d / "results.json").read_text()) for d in (out, again))
    assert [(r["label"], r["seed"]) for r in second] == [(r["label"], r["seed"]) for r in first]
    for a, b in zip(first, second):
        assert {**a, "elapsed_s": 0} == {**b, "elapsed_s": 0}
    assert [_timeless(r) for r in _read_csv(again / "ablation_table.csv")] == \
        [_timeless(r) for r in rows]
    assert json.loads((again / "runs.json").read_text())["runs"] == runs
    assert _script("run_ablation").main(["--reevaluate", str(exps), "--threads", "1"]) == 2
    assert f"{exps}: no runs.json" in capsys.readouterr().err


@pytest.mark.slow
def test_run_ablation_merges_folders_over_seeds(exps, capsys):
    """Runs split over two invocations (as on two cores) merge into one comparison whose rows
    are re-aggregated over seeds from the saved IoU series."""
    common = ["--minutes", "0.001", "--epoch-steps", "2", "--datasets", "Synthetic",
              "--eval-samples", "2", "--n-clicks", "3", "--threads", "1"]
    full, small = str(JOB_CONFIGS / "tiny_full.py"), str(JOB_CONFIGS / "tiny_noiga_nolrr.py")
    run = _script("run_ablation")
    assert run.main([full, "--seeds", "0", "--output", str(exps / "a"), *common,
                     "--references", "cv_grabcut"]) == 0
    assert run.main([full, small, "--seeds", "1", "--output", str(exps / "b"), *common]) == 0
    parts = {name: {(r["model"], int(r["seeds"])): r for r in
                    _read_csv(exps / name / "ablation_table.csv")} for name in "ab"}
    assert run.main(["--merge", str(exps / "a"), str(exps / "b"), "--output",
                     str(exps / "ab")]) == 0
    rows = {r["model"]: r for r in _read_csv(exps / "ab" / "ablation_table.csv")}
    assert list(rows) == ["tiny_full", "OpenCV GrabCut", "tiny_noiga_nolrr"]
    assert [rows[m]["seeds"] for m in rows] == ["2", "1", "1"]
    a0, b1 = parts["a"][("tiny_full", 1)], parts["b"][("tiny_full", 1)]
    for key in ("NoC@85", "mIoU@1", "mIoU@3"):
        assert float(rows["tiny_full"][key]) == pytest.approx(
            (float(a0[key]) + float(b1[key])) / 2, abs=1e-5)
        assert float(rows["tiny_noiga_nolrr"][key]) == pytest.approx(
            float(parts["b"][("tiny_noiga_nolrr", 1)][key]), abs=1e-5)
    merged = json.loads((exps / "ab" / "runs.json").read_text())
    assert merged["seeds"] == [0, 1] and len(merged["runs"]) == 3
    paired = {r["model"]: r for r in json.loads((exps / "ab" / "paired.json").read_text())
              if r["threshold"] == 0.85}
    assert set(paired) == {"OpenCV GrabCut", "tiny_noiga_nolrr"}
    assert paired["tiny_noiga_nolrr"]["seeds"] == 1 and paired["tiny_noiga_nolrr"]["objects"] == 2
    assert list(paired["tiny_noiga_nolrr"]["seed_deltas"]) == ["1"]
    assert "| tiny_noiga_nolrr | Synthetic | 85 |" in (exps / "ab" / "paired.md").read_text()
    assert cv2.imread(str(exps / "ab" / "miou_vs_clicks.png")) is not None
    # folders trained with other budgets do not merge; a folder that is not one is named
    assert run.main([small, "--steps", "1", "--epoch-steps", "1", "--datasets", "Synthetic",
                     "--eval-samples", "1", "--n-clicks", "3", "--threads", "1",
                     "--output", str(exps / "c")]) == 0
    capsys.readouterr()
    assert run.main(["--merge", str(exps / "a"), str(exps / "c"), "--output",
                     str(exps / "ac")]) == 2
    assert "different budgets" in capsys.readouterr().err
    assert run.main(["--merge", str(exps / "a"), str(exps), "--output", str(exps / "x")]) == 2
    assert f"{exps}: no runs.json" in capsys.readouterr().err


@pytest.mark.slow
def test_run_ablation_labels_recipe_overrides_and_refuses_ambiguous_merges(exps, capsys):
    """A run with --recipe-override is another model: its rows carry the change, it merges
    beside the plain runs of the same seed, and a folder that did not record its override
    (written before overrides were recorded) is relabelled by --reevaluate; two different runs
    under one label are refused rather than one of them dropped."""
    common = ["--minutes", "0.001", "--epoch-steps", "2", "--datasets", "Synthetic",
              "--eval-samples", "2", "--n-clicks", "3", "--threads", "1"]
    full = str(JOB_CONFIGS / "tiny_full.py")
    run = _script("run_ablation")
    assert run.main([full, "--seeds", "1", "--output", str(exps / "plain"), *common]) == 0
    override = ["--recipe-override", '{"focus_size_range": [0.6, 1.4]}']
    assert run.main([full, "--seeds", "1", "--output", str(exps / "wide"), *common,
                     *override]) == 0
    label = "tiny_full [focus_size_range=[0.6,1.4]]"
    assert [r["model"] for r in _read_csv(exps / "wide" / "ablation_table.csv")] == [label]
    wide_runs = json.loads((exps / "wide" / "runs.json").read_text())["runs"]
    assert wide_runs[0]["label"] == label
    assert wide_runs[0]["recipe_override"] == {"focus_size_range": [0.6, 1.4]}
    assert run.main(["--merge", str(exps / "plain"), str(exps / "wide"), "--output",
                     str(exps / "both")]) == 0
    rows = {r["model"]: r for r in _read_csv(exps / "both" / "ablation_table.csv")}
    assert list(rows) == ["tiny_full", label] and rows[label]["seeds"] == "1"
    paired = json.loads((exps / "both" / "paired.json").read_text())
    assert {r["model"] for r in paired} == {label}

    # an old-style folder: plain labels, no override recorded
    old = exps / "old"
    shutil.copytree(exps / "wide", old)
    results = json.loads((old / "results.json").read_text())
    for r in results:
        r["label"] = "tiny_full"
    (old / "results.json").write_text(json.dumps(results))
    info = json.loads((old / "runs.json").read_text())
    for r in info["runs"]:
        del r["label"], r["recipe_override"]
    (old / "runs.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert run.main(["--merge", str(exps / "plain"), str(old), "--output",
                     str(exps / "clash")]) == 2
    assert "'tiny_full' (seed 1) on Synthetic appears in several folders with different " \
           "results" in capsys.readouterr().err
    # the same folder twice is not a clash: its rows are merged once
    assert run.main(["--merge", str(exps / "plain"), str(exps / "plain"), "--output",
                     str(exps / "twice")]) == 0
    assert _read_csv(exps / "twice" / "ablation_table.csv")[0]["seeds"] == "1"
    assert run.main(["--reevaluate", str(old), "--datasets", "Synthetic", "--eval-samples", "2",
                     "--n-clicks", "3", "--threads", "1", *override]) == 0
    assert [r["model"] for r in _read_csv(old / "ablation_table.csv")] == [label]
    assert json.loads((old / "runs.json").read_text())["runs"][0]["label"] == label
    assert run.main(["--merge", str(exps / "plain"), str(old), "--output",
                     str(exps / "fixed")]) == 0
    # a recorded override that contradicts the one given is an error
    assert run.main(["--reevaluate", str(old), "--datasets", "Synthetic", "--eval-samples", "2",
                     "--n-clicks", "3", "--threads", "1", "--recipe-override",
                     '{"lr": 0.001}']) == 2
    assert "records the recipe override" in capsys.readouterr().err


def test_main_job_fails_early_on_a_missing_dataset(exps, monkeypatch, capsys):
    monkeypatch.setenv("GRABCUT_PATH", str(exps / "nowhere"))
    assert _script("main_job").main(["--quick", "--datasets", "GrabCut"]) == 2
    err = capsys.readouterr().err
    assert "GRABCUT_PATH" in err and "nowhere" in err
    assert not exps.exists()


@pytest.mark.parametrize("suffix, differences", [
    ("", {}),
    ("_noiga", {"iga_stages": ()}),
    ("_nolrr", {"use_refiner": False}),
    ("_noiga_nolrr", {"iga_stages": (), "use_refiner": False}),
])
def test_cpu_study_configs_differ_from_the_base_only_in_the_model(suffix, differences, tmp_path,
                                                                  monkeypatch, capsys):
    path = REPO / "models" / "iglr_cpu" / f"segformerB0_S2_coco_mval{suffix}.py"
    module = load_config_module(path)
    base = recipe.COCO_MVAL_CPU
    assert module.RECIPE.model_kwargs == {**base.model_kwargs, **differences}
    assert dataclasses.replace(module.RECIPE, model_kwargs=base.model_kwargs) == base
    # trained on the 350-image split, validated on the 50 held-out images (issue 15)
    assert (base.train_dataset, base.val_dataset) == ("COCO_MVal_train", "COCO_MVal_val")
    assert base.pretrained
    # Issue 6 item 4: IMAGENET_PRETRAINED_MODELS.SEGFORMER_B0 is used; the default path absent
    # -> warning, scratch (an explicit path that is absent is an error: issue 16).
    monkeypatch.delenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", raising=False)
    configs = tmp_path / "configs.yml"
    configs.write_text('IMAGENET_PRETRAINED_MODELS:\n  SEGFORMER_B0: "./weights/pretrained/mit_b0.pth"\n')
    setup_logging(None)
    model, _ = module.init_model(RunConfig(config_path=path, paths=load_config(configs), cpu=True))
    err = capsys.readouterr().err
    assert "mit_b0.pth" in err and "FROM SCRATCH" in err
    assert model.use_refiner == differences.get("use_refiner", True)


def test_budgets():
    rec = recipe.SYNTHETIC_CPU
    steps = budgeted_recipe(rec, Budget(steps=100, epoch_steps=25), batch_size=8)
    assert (steps.epochs, steps.epoch_len, steps.milestones) == (4, 200, (3,))
    assert steps.warmup_steps == rec.warmup_steps == 100  # the recipe's warm-up is kept
    uneven = budgeted_recipe(rec, Budget(steps=10, epoch_steps=4), batch_size=2)
    assert (uneven.epochs, uneven.epoch_len // 2) == (3, 4)   # 12 steps: whole epochs
    timed = budgeted_recipe(rec, Budget(minutes=5), batch_size=8)
    assert timed.milestones == () and timed.epoch_len == 200 and timed.epochs > 10 ** 5
    for bad in (dict(), dict(steps=10, minutes=1.0), dict(steps=0), dict(minutes=-1.0),
                dict(steps=5, decay_at=0.0)):
        with pytest.raises(BudgetError):
            Budget(**bad)


def test_validation_stability_after_the_warm_up():
    """run_ablation's check of the issue-15 target: the lowest ratio of the validation IoU to
    its running best, over the epochs after the warm-up."""
    stability = _script("run_ablation").curve_stability
    curve = [[0, 0.5], [1, 0.1], [2, 0.4], [3, 0.6], [4, 0.45], [5, 0.7]]
    assert stability(curve, 0) == pytest.approx(0.2)      # 0.1 / 0.5 at epoch 1
    assert stability(curve, 2) == pytest.approx(0.75)     # 0.45 / 0.6 at epoch 4
    assert stability(curve, 6) is None and stability([], 0) is None


def _noc_result(label, seed, nocs, ids, n_clicks, dataset="D"):
    """A NocResult in which object i reaches every threshold exactly at click nocs[i] (IoU 0.95
    from then on, 0.5 before)."""
    import numpy as np
    from isegm.jobs.noc import NocResult
    series = [np.where(np.arange(1, n_clicks + 1) >= n, 0.95, 0.5).astype(np.float32)
              for n in nocs]
    return NocResult(label=label, dataset=dataset, all_ious=series, sample_ids=list(ids),
                     n_clicks=n_clicks, elapsed_s=1.0, seed=seed)


def test_paired_comparison_counts_objects_and_averages_seeds():
    """Per-object NoC differences against the reference, seeds averaged per object; a known
    shift gives a known delta, interval and counts; mismatched objects are refused."""
    from isegm.jobs.noc import paired_comparison, paired_markdown

    def result(label, seed, nocs, ids=("a", "b", "c", "d")):
        return _noc_result(label, seed, nocs, ids, n_clicks=5)

    results = [result("full", 0, [1, 2, 3, 2]), result("full", 1, [1, 2, 3, 4]),
               result("plain", 0, [2, 3, 3, 2]), result("plain", 1, [2, 3, 3, 4]),
               result("ref", None, [1, 1, 1, 1])]
    rows = paired_comparison(results, "full", thresholds=(0.9,), resamples=2000)
    plain, ref = rows
    assert (plain["model"], plain["objects"], plain["seeds"]) == ("plain", 4, 2)
    assert plain["delta"] == pytest.approx(0.5)  # +1 on objects a and b, 0 on c and d
    assert (plain["worse"], plain["better"]) == (2, 0)
    assert 0.0 <= plain["ci95"][0] <= 0.5 <= plain["ci95"][1] <= 1.0
    assert plain["seed_deltas"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.5)}
    assert ref["delta"] == pytest.approx(-1.25) and ref["better"] == 3 and ref["seed_deltas"] == {}
    text = paired_markdown(rows)
    assert "| plain | D | 90 | +0.50 |" in text and "0: +0.50, 1: +0.50" in text
    with pytest.raises(ValueError, match="other objects"):
        paired_comparison(results + [result("odd", 0, [1, 1, 1, 1], ids=("a", "b", "c", "x"))],
                          "full")


def test_factorial_effects_of_a_2x2_ablation():
    """Designs are found by name; known per-object shifts give known main effects, simple
    effects and interaction; the seed-resampled interval is the wider one when seeds differ."""
    import numpy as np
    from isegm.jobs.noc import factorial_effects, factorial_markdown, find_factorial_designs

    def result(label, seed, nocs, ids=("a", "b", "c", "d")):
        return _noc_result(label, seed, nocs, ids, n_clicks=7)

    # base; _x costs 1 click on every object alone; _y costs nothing alone; together 4
    results = [result("m", 0, [1, 2, 3, 2]), result("m", 1, [1, 2, 3, 2]),
               result("m_x", 0, [2, 3, 4, 3]), result("m_x", 1, [2, 3, 4, 3]),
               result("m_y", 0, [1, 2, 3, 2]), result("m_y", 1, [1, 2, 3, 2]),
               result("m_x_y", 0, [4, 5, 6, 5]), result("m_x_y", 1, [6, 7, 7, 7]),
               result("OpenCV GrabCut", None, [1, 1, 1, 1])]
    labels = list(dict.fromkeys(r.label for r in results))
    assert find_factorial_designs(labels) == [("m", "x", "y")]
    assert find_factorial_designs(["m", "m_x", "m_y"]) == []
    # one table row per dataset repeats every label: still one design
    assert find_factorial_designs(labels + labels) == [("m", "x", "y")]
    rows = {r["effect"]: r for r in factorial_effects(results, "m", "x", "y", thresholds=(0.9,),
                                                      resamples=2000)}
    xy = np.mean([4, 5, 6, 5, 6, 7, 7, 7]) - 2.0  # both changes against the base, per object
    assert rows["_x alone (against the base)"]["delta"] == pytest.approx(1.0)
    assert rows["_y alone (against the base)"]["delta"] == pytest.approx(0.0)
    assert rows["_x on top of _y"]["delta"] == pytest.approx(xy)
    assert rows["_y on top of _x"]["delta"] == pytest.approx(xy - 1.0)
    assert rows["_x (main effect)"]["delta"] == pytest.approx(0.5 * (1.0 + xy))
    assert rows["_y (main effect)"]["delta"] == pytest.approx(0.5 * (xy - 1.0))
    assert rows["interaction _x x _y"]["delta"] == pytest.approx(xy - 1.0)
    alone = rows["_x alone (against the base)"]
    assert alone["ci95_objects"] == pytest.approx([1.0, 1.0])  # the same shift on every object
    assert alone["ci95_objects_seeds"] == pytest.approx([1.0, 1.0])  # seeds agree
    top = rows["_x on top of _y"]  # its two seeds differ: the seed interval is wider
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(top["ci95_objects_seeds"]) > width(top["ci95_objects"])
    assert alone["seeds"] == {"full": 2, "x": 2, "y": 2, "xy": 2} and alone["objects"] == 4
    text = factorial_markdown(list(rows.values()))
    assert "| _x alone (against the base) | D | 90 | +1.00 | [+1.00, +1.00] |" in text
    with pytest.raises(ValueError, match="other objects"):
        factorial_effects(results + [result("m_y", 2, [1, 1, 1, 1], ids=("a", "b", "c", "x"))],
                          "m", "x", "y")


def test_run_ablation_merge_writes_the_factorial_table(tmp_path, capsys):
    """Comparison folders (their results.json and runs.json) that together form a 2x2 ablation
    merge into a comparison with factorial.md / .json beside the paired table."""
    from isegm.jobs.noc import save_results

    def result(label, seed, nocs):
        return _noc_result(label, seed, nocs, ("a", "b", "c"), n_clicks=5, dataset="GrabCut")

    folders = []
    for name, nocs in (("m", [1, 2, 3]), ("m_x", [2, 3, 4]), ("m_y", [1, 2, 3]),
                       ("m_x_y", [3, 4, 5])):
        folder = tmp_path / name
        folder.mkdir()
        save_results([result(name, 0, nocs)], folder / "results.json")
        (folder / "runs.json").write_text(json.dumps({"budget": "5 steps", "seeds": [0],
                                                      "runs": []}))
        folders.append(str(folder))
    out = tmp_path / "merged"
    assert _script("run_ablation").main(["--merge", *folders, "--output", str(out)]) == 0
    effects = {(r["effect"], r["threshold"]): r["delta"]
               for r in json.loads((out / "factorial.json").read_text())}
    assert effects[("_x alone (against the base)", 0.85)] == pytest.approx(1.0)
    assert effects[("_x on top of _y", 0.85)] == pytest.approx(2.0)
    assert effects[("interaction _x x _y", 0.9)] == pytest.approx(1.0)
    assert "| _y (main effect) | GrabCut | 85 | +0.50 |" in (out / "factorial.md").read_text()
    assert "factorial effects" in capsys.readouterr().out


def test_run_ablation_records_each_run_before_evaluating_it(exps, monkeypatch, capsys):
    """runs.json lists a run as soon as it is trained: an evaluation that stops (here: an
    interrupt during the first evaluation) leaves what --reevaluate needs."""
    module = _script("run_ablation")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(module, "evaluate_noc", interrupted)
    out = exps / "stopped"
    with pytest.raises(KeyboardInterrupt):
        module.main([str(JOB_CONFIGS / "tiny_full.py"), "--steps", "2", "--epoch-steps", "2",
                     "--seeds", "0", "--datasets", "Synthetic", "--eval-samples", "2",
                     "--output", str(out), "--threads", "1"])
    info = json.loads((out / "runs.json").read_text())
    assert info["seeds"] == [0] and len(info["runs"]) == 1
    run = info["runs"][0]
    assert Path(run["config"]).stem == "tiny_full" and run["steps"] == 2
    assert Path(run["checkpoint"]).is_file()
    assert not (out / "results.json").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
