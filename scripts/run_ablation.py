"""Train several config modules with one budget and seed set, evaluate each, compare in one table.

    .venv/bin/python scripts/run_ablation.py \
        models/iglr_cpu/segformerB0_S2_coco_mval.py models/iglr_cpu/segformerB0_S2_coco_mval_noiga.py \
        models/iglr_cpu/segformerB0_S2_coco_mval_nolrr.py models/iglr_cpu/segformerB0_S2_coco_mval_noiga_nolrr.py \
        --minutes 30 --seeds 0 1 2 --datasets GrabCut --references cv_grabcut untrained

Every (config, seed) trains in its own experiment folder (EXPS_PATH/<family>/<config>/NNN_<name>)
with the same budget (`--steps`/`--epochs`, or `--minutes` of wall time), and its checkpoint with
the best validation IoU (`best_checkpoint.pth`, chosen on the recipe's validation set: for the
COCO_MVal study the 50 held-out images; the last checkpoint if no validation ran) is evaluated
with the NoC protocol (20 clicks per object; the IGLR predictor for models with the
refiner, the coarse predictor without). The comparison goes to EXPS_PATH/ablations/NNN_<name>/:
    ablation_table.md / .csv / .json   NoC@85/90, NoF@90, mIoU@1/3/5 (mean ± std over seeds)
    miou_vs_clicks.png                 one curve per config (± std band over seeds)
    paired.md / .json                  every model against the first, object by object
    factorial.md / .json               main effects and interaction where the configs form a
                                       2x2 ablation by name (base, base_x, base_y, base_x_y)
    runs.json                          experiment folder, steps and wall time of every run, its
                                       validation IoU per epoch and the lowest ratio of it to
                                       its running best after the warm-up (`val_stability`);
                                       rewritten after every training, so an evaluation that
                                       stopped can be redone with --reevaluate
    results.json                       every run's full IoU series (what --merge reads)
Runs can be split over processes (e.g. two configs per process with `--threads 1` on two cores,
each with its own `--output`) and combined afterwards, re-aggregated over seeds:

    .venv/bin/python scripts/run_ablation.py --merge DIR_A DIR_B --output DIR
A folder written before results.json existed (or evaluated with other settings) gets its
checkpoints evaluated again, rows and results.json rewritten in place (or in --output):

    .venv/bin/python scripts/run_ablation.py --reevaluate DIR --datasets GrabCut --references untrained
A run with `--recipe-override` is labelled with its changes (e.g. `segformerB0_S2_coco_mval
[iga_lr_mult=5.0]`), so it merges beside the plain runs; --merge refuses two different runs under
one label (a folder written before overrides were recorded is relabelled by --reevaluate with
its --recipe-override).
Reference rows (`--references`): 'cv_grabcut' (OpenCV GrabCut seeded by the clicks, no training)
and 'untrained' (the first config's network before training, per seed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from isegm.data.io import DatasetError  # noqa: E402
from isegm.engine.experiment import ExperimentError, create_exp_dir  # noqa: E402
from isegm.inference.predictors import get_predictor, predictor_name_for_mode  # noqa: E402
from isegm.jobs.noc import (aggregate, build_eval_dataset, evaluate_noc,  # noqa: E402
                            factorial_effects, factorial_markdown, find_factorial_designs,
                            load_results, paired_comparison, paired_markdown, save_results,
                            write_table)
from isegm.jobs.training import (BudgetError, add_budget_arguments, add_run_arguments,  # noqa: E402
                                 budget_from_args, check_recipe_changes, initial_model,
                                 load_recipe, train_config)
from isegm.inference.results import write_text_atomic  # noqa: E402
from isegm.model import load_is_model  # noqa: E402
from isegm.utils.config import ConfigError, ConfigPathError, load_config  # noqa: E402
from isegm.utils.log import logger, setup_logging  # noqa: E402
from isegm.utils.serialization import CheckpointError  # noqa: E402
from isegm.utils.vis import plot_miou_curves  # noqa: E402

REFERENCES = ("cv_grabcut", "untrained")
DEFAULT_STEPS = 400


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_ablation.py", description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="*", help="config modules to train and compare")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="instead of training: combine the comparison folders of earlier runs "
                        "(their results.json and runs.json) into one table and figure")
    p.add_argument("--reevaluate", type=str, default=None, metavar="DIR",
                   help="instead of training: evaluate again the checkpoints listed in DIR's "
                        "runs.json (the 'untrained' reference rebuilt from each seed) and "
                        "rewrite DIR's table, figure and results.json (or write to --output)")
    add_budget_arguments(p)
    add_run_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (one run each)")
    p.add_argument("--datasets", type=str, default="GrabCut",
                   help="comma-separated evaluation datasets (e.g. GrabCut,Synthetic)")
    p.add_argument("--eval-samples", type=int, default=None,
                   help="objects evaluated per dataset (default: all; Synthetic: 100)")
    p.add_argument("--n-clicks", type=int, default=20, help="clicks per object (N of NoC)")
    p.add_argument("--references", nargs="*", default=[], choices=REFERENCES,
                   help="reference rows: the classical predictor and/or the untrained network")
    p.add_argument("--exp-name", type=str, default="ablation",
                   help="suffix of the run folders and of the comparison folder")
    p.add_argument("--output", type=str, default=None,
                   help="comparison folder (default: a new EXPS_PATH/ablations/NNN_<exp-name>)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(None)
    if args.merge is not None:
        return merge(args)
    if args.reevaluate is not None:
        return reevaluate(args)
    if not args.configs:
        print("run_ablation.py: error: name at least one config module (or use --merge)",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        paths = load_config(args.config)
        budget = budget_from_args(args, DEFAULT_STEPS)
        configs = [Path(c) for c in args.configs]
        if len({c.stem for c in configs}) != len(configs):
            raise BudgetError(f"config names must differ (they label the rows): {args.configs}")
        for config in configs:
            load_recipe(config)
        changes = check_recipe_changes(
            json.loads(args.recipe_override) if args.recipe_override else {})
        datasets = _datasets(args, paths)
        if args.output:
            out = Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
        else:
            out = create_exp_dir(paths.resolve("EXPS_PATH") / "ablations", args.exp_name).root
    except (BudgetError, ConfigError, ConfigPathError, DatasetError, ExperimentError, KeyError,
            json.JSONDecodeError) as e:
        print(f"run_ablation.py: error: {e}", file=sys.stderr)
        return 2

    results, runs = [], []
    evaluate = _evaluator(args, datasets, results)
    total = len(configs) * len(args.seeds)
    for i, config in enumerate(configs):
        for seed in args.seeds:
            logger.info(f"[run {len(runs) + 1}/{total}] {config.stem}, seed {seed}, "
                        f"{budget.describe()}")
            try:
                run = train_config(config, paths, budget, seed=seed, exp_name=args.exp_name,
                                   workers=args.workers, batch_size=args.batch_size,
                                   recipe_changes=changes, trust_checkpoint=args.trust_checkpoint)
            except CheckpointError as e:  # ImageNet weights refused (or unreadable)
                print(f"run_ablation.py: error: {e}", file=sys.stderr)
                return 2
            label = run_label(config, changes)
            chosen = run.best_checkpoint if run.best_checkpoint is not None else run.checkpoint
            curve = validation_curve(run.exp_root)
            warmup_epochs = -(-run.recipe.warmup_steps // max(1, budget.epoch_steps))
            stability = curve_stability(curve, warmup_epochs)
            runs.append({"config": str(config), "label": label, "seed": seed,
                         "exp": str(run.exp_root), "checkpoint": str(chosen),
                         "last_checkpoint": str(run.checkpoint),
                         "steps": run.steps, "epochs": run.epochs,
                         "wall_s": round(run.wall_s, 1), "recipe_override": changes,
                         "val_iou": curve, "val_stability": stability})
            # written after every training: an evaluation that stops (a killed process) can be
            # redone from the checkpoints with --reevaluate
            write_runs(out, budget.describe(), args.seeds, runs)
            logger.info(f"{label}, seed {seed}: evaluating {chosen.name}; lowest validation IoU "
                        f"/ running best after the warm-up: {stability}")
            evaluate(load_is_model(chosen, "cpu"), label, seed)
            if i == 0 and "untrained" in args.references:
                evaluate(run.initial_model, "untrained", seed)
    if "cv_grabcut" in args.references:
        logger.info("reference: OpenCV GrabCut predictor")
        evaluate(None, "OpenCV GrabCut", None)

    title = (f"{budget.describe()}, seeds [{', '.join(map(str, args.seeds))}], "
             f"{args.n_clicks} clicks per object")
    write_runs(out, budget.describe(), args.seeds, runs)
    save_results(results, out / "results.json")
    report(aggregate(results), out, title, start, results)
    return 0


def write_runs(out: Path, budget: str, seeds: Sequence[int], runs: list) -> Path:
    """runs.json: the budget, the seeds and the runs trained so far (written atomically)."""
    path = out / "runs.json"
    write_text_atomic(path, json.dumps({"budget": budget, "seeds": list(seeds), "runs": runs},
                                       indent=2))
    return path


def _same_series(a, b) -> bool:
    """Whether two NocResults hold the same objects and IoU series."""
    return (list(a.sample_ids) == list(b.sample_ids) and len(a.all_ious) == len(b.all_ious)
            and all(np.array_equal(x, y) for x, y in zip(a.all_ious, b.all_ious)))


def validation_curve(exp_root: Path) -> list:
    """The run's validation IoU per epoch ([epoch, IoU] pairs) from its tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(exp_root), size_guidance={"scalars": 0})
    events.Reload()
    if "epoch/val/iou" not in events.Tags().get("scalars", []):
        return []
    return [[int(e.step), round(float(e.value), 5)] for e in events.Scalars("epoch/val/iou")]


def curve_stability(curve: list, warmup_epochs: int) -> Optional[float]:
    """The lowest ratio of the validation IoU to its running best over the epochs after the
    warm-up (the issue-15 target: never below 0.5); None without such epochs."""
    best, ratios = 0.0, []
    for epoch, iou in curve:
        best = max(best, iou)
        if epoch >= warmup_epochs and best > 0:
            ratios.append(iou / best)
    return round(min(ratios), 4) if ratios else None


def run_label(config: Path, changes: dict) -> str:
    """The row label of a config trained with recipe `changes`: the module name, followed by
    the changes when there are any (a run with another recipe is another model)."""
    if not changes:
        return config.stem
    return config.stem + " [" + ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                                          for k, v in sorted(changes.items())) + "]"


def _datasets(args: argparse.Namespace, paths) -> list:
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    samples = args.eval_samples if args.eval_samples is not None else 100
    return [build_eval_dataset(n, paths, synthetic_samples=samples) for n in names]


def _evaluator(args: argparse.Namespace, datasets: list, results: list):
    """evaluate(model or None for OpenCV GrabCut, label, seed): NoC on every dataset, appended
    to `results` (the IGLR predictor for models with the refiner, the coarse one without)."""
    def evaluate(model, label: str, seed: Optional[int]) -> None:
        predictor = (get_predictor("cv_grabcut") if model is None else
                     get_predictor(predictor_name_for_mode("NoBRS", model), model, "cpu"))
        for dataset in datasets:
            results.append(evaluate_noc(predictor, dataset, label=label, n_clicks=args.n_clicks,
                                        max_samples=args.eval_samples, seed=seed))
    return evaluate


def reevaluate(args: argparse.Namespace) -> int:
    """--reevaluate: the checkpoints of an earlier comparison folder evaluated again."""
    start = time.perf_counter()
    folder = Path(args.reevaluate)
    if args.configs:
        print("run_ablation.py: error: --reevaluate takes a comparison folder, not config "
              f"modules ({' '.join(args.configs)})", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if not (folder / "runs.json").is_file():
            raise ValueError(f"{folder}: no runs.json (not a folder written by run_ablation.py)")
        info = json.loads((folder / "runs.json").read_text(encoding="utf-8"))
        runs = info["runs"]
        missing = [r["checkpoint"] for r in runs if not Path(r["checkpoint"]).is_file()]
        if missing:
            raise ValueError(f"{folder / 'runs.json'}: checkpoint(s) not found: "
                             f"{', '.join(missing)}")
        paths = load_config(args.config)
        changes = check_recipe_changes(
            json.loads(args.recipe_override) if args.recipe_override else {})
        datasets = _datasets(args, paths)
    except (ValueError, KeyError, BudgetError, ConfigError, ConfigPathError, DatasetError) as e:
        print(f"run_ablation.py: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else folder
    out.mkdir(parents=True, exist_ok=True)
    results: list = []
    evaluate = _evaluator(args, datasets, results)
    first = runs[0]["config"] if runs else None
    for run in runs:
        recorded = run.get("recipe_override")
        if recorded is not None and args.recipe_override and recorded != changes:
            print(f"run_ablation.py: error: {folder / 'runs.json'} records the recipe override "
                  f"{json.dumps(recorded)} for {run['checkpoint']}, not {args.recipe_override}",
                  file=sys.stderr)
            return 2
        # folders written before overrides were recorded take --recipe-override's
        run["recipe_override"] = recorded if recorded is not None else changes
        run["label"] = run_label(Path(run["config"]), run["recipe_override"])
    for k, run in enumerate(runs):
        label = run["label"]
        logger.info(f"[{k + 1}/{len(runs)}] {label}, seed {run['seed']}: {run['checkpoint']}")
        try:
            model = load_is_model(run["checkpoint"], "cpu", trust=args.trust_checkpoint)
        except CheckpointError as e:
            print(f"run_ablation.py: error: {e}", file=sys.stderr)
            return 2
        evaluate(model, label, run["seed"])
        if run["config"] == first and "untrained" in args.references:
            evaluate(initial_model(Path(run["config"]), paths, seed=run["seed"],
                                   batch_size=args.batch_size,
                                   recipe_changes=run["recipe_override"],
                                   trust_checkpoint=args.trust_checkpoint),
                     "untrained", run["seed"])
    if "cv_grabcut" in args.references:
        logger.info("reference: OpenCV GrabCut predictor")
        evaluate(None, "OpenCV GrabCut", None)
    (out / "runs.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    save_results(results, out / "results.json")
    title = (f"{info['budget']}, seeds [{', '.join(map(str, info['seeds']))}], "
             f"{args.n_clicks} clicks per object")
    report(aggregate(results), out, title, start, results)
    return 0


def report(rows, out: Path, title: str, start: float, results: Optional[list] = None) -> None:
    """Write and print the comparison (aggregated rows) in `out`; with the full `results`, also
    the paired per-object comparison of every model with the first one (paired.md / .json)."""
    tables = write_table(rows, out / "ablation_table", title=title)
    plot = plot_miou_curves(rows, out / "miou_vs_clicks.png", title=title)
    print(f"\n{title}\n")
    print(tables["md"].read_text(encoding="utf-8").split("\n", 2)[-1])
    print(f"comparison table : {tables['md']}  ({tables['csv'].name}, {tables['json'].name})")
    paired = paired_comparison(results, rows[0]["model"]) if results and rows else []
    if paired:
        text = paired_markdown(paired)
        (out / "paired.md").write_text(f"# {title}: each model against {rows[0]['model']}, "
                                       f"object by object\n\n{text}\n", encoding="utf-8")
        (out / "paired.json").write_text(json.dumps(paired, indent=2), encoding="utf-8")
        print(f"\n{text}\n")
        print(f"paired comparison: {out / 'paired.md'}")
    designs = find_factorial_designs([r["model"] for r in rows]) if results else []
    factorial = [row for design in designs for row in factorial_effects(results, *design)]
    if factorial:
        text = factorial_markdown(factorial)
        (out / "factorial.md").write_text(
            f"# {title}: the 2x2 ablation{'s' if len(designs) > 1 else ''} "
            f"({'; '.join(f'{b}, _{x}, _{y}, _{x}_{y}' for b, x, y in designs)})\n\n{text}\n",
            encoding="utf-8")
        (out / "factorial.json").write_text(json.dumps(factorial, indent=2), encoding="utf-8")
        print(f"\n{text}\n")
        print(f"factorial effects: {out / 'factorial.md'}")
    print(f"mIoU-vs-clicks   : {plot}")
    print(f"runs             : {out / 'runs.json'}")
    print(f"total time       : {(time.perf_counter() - start) / 60:.1f} min")


def merge(args: argparse.Namespace) -> int:
    """--merge: one comparison from several comparison folders."""
    start = time.perf_counter()
    if args.configs:
        print("run_ablation.py: error: --merge takes comparison folders, not config modules "
              f"({' '.join(args.configs)})", file=sys.stderr)
        return 2
    if not args.output:
        print("run_ablation.py: error: --merge needs --output (the merged comparison folder)",
              file=sys.stderr)
        return 2
    results, tabled, runs, budgets, seeds = [], [], [], [], []
    try:
        for folder in map(Path, args.merge):
            if not (folder / "runs.json").is_file():
                raise ValueError(f"{folder}: no runs.json (not a folder written by "
                                 f"run_ablation.py)")
            if (folder / "results.json").is_file():
                results.extend(load_results(folder / "results.json"))
            elif (folder / "ablation_table.json").is_file():
                # older folders kept only the aggregated rows: merged as they are
                tabled.extend(json.loads((folder / "ablation_table.json").read_text("utf-8")))
            else:
                raise ValueError(f"{folder}: neither results.json nor ablation_table.json")
            info = json.loads((folder / "runs.json").read_text(encoding="utf-8"))
            runs.extend(info["runs"])
            budgets.append(info["budget"])
            seeds.extend(s for s in info["seeds"] if s not in seeds)
    except (ValueError, KeyError) as e:
        print(f"run_ablation.py: error: {e}", file=sys.stderr)
        return 2
    if len(set(budgets)) != 1:
        print(f"run_ablation.py: error: the folders were trained with different budgets "
              f"({'; '.join(budgets)}): not comparable", file=sys.stderr)
        return 2
    clicks = {r.n_clicks for r in results} | {len(r["mIoU_curve"]) for r in tabled}
    if len(clicks) != 1:
        print(f"run_ablation.py: error: the folders used different numbers of clicks "
              f"({sorted(clicks)})", file=sys.stderr)
        return 2
    seen: dict = {}
    unique = []
    for r in results:  # a reference row (e.g. OpenCV GrabCut) evaluated in several folders
        key = (r.label, r.dataset, r.seed)
        if key not in seen:
            seen[key] = r
            unique.append(r)
        elif not _same_series(seen[key], r):
            print(f"run_ablation.py: error: '{r.label}' (seed {r.seed}) on {r.dataset} appears "
                  f"in several folders with different results: two runs under one label (name "
                  f"runs of another recipe with --recipe-override, which labels them)",
                  file=sys.stderr)
            return 2
    rows = aggregate(unique) + tabled
    keys = [(r["model"], r["dataset"]) for r in rows]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if tabled and clash:
        print(f"run_ablation.py: error: {clash} appear in several folders of which some have no "
              f"results.json: their seeds cannot be combined", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.json").write_text(json.dumps({"budget": budgets[0], "seeds": seeds,
                                               "merged_from": [str(f) for f in args.merge],
                                               "runs": runs}, indent=2), encoding="utf-8")
    if not tabled:
        save_results(unique, out / "results.json")
    title = (f"{budgets[0]}, seeds [{', '.join(map(str, seeds))}], {clicks.pop()} clicks per "
             f"object")
    report(rows, out, title, start, None if tabled else unique)
    return 0


if __name__ == "__main__":
    sys.exit(main())
