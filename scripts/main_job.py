"""The main job: train IGLR-B0-S2 on the built-in Synthetic dataset on the CPU for a few minutes,
then evaluate it with the NoC protocol and write the results into the run's experiment folder.

    bash scripts/setup.sh && .venv/bin/python scripts/main_job.py
    GRABCUT_PATH=/data/GrabCut .venv/bin/python scripts/main_job.py --minutes 10
    .venv/bin/python scripts/main_job.py --quick          # a handful of steps (smoke test)

Steps: (1) train the config module (default models/iglr_cpu/segformerB0_S2_synthetic.py) with
the one trainer under a step or time budget; (2) evaluate the final checkpoint and, as the
reference row, the same network before training, with the IGLR predictor (20 clicks per object,
flip averaging) on held-out Synthetic objects and, where GRABCUT_PATH resolves to an existing
folder, on GrabCut; (3) write into <experiment folder>/evaluation/:
    noc_table.md / .csv / .json   NoC@80/85/90, NoF@85/90, mIoU@1/3/5 per model and dataset
    miou_vs_clicks.png            mIoU versus number of clicks, one curve per model
    vis/<dataset>_<model>_<sample>.png   predictions after clicks 1, 3, 5, 20 with the clicks
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

import torch  # noqa: E402

from isegm.data.io import DatasetError  # noqa: E402
from isegm.engine.experiment import ExperimentError  # noqa: E402
from isegm.inference.predictors import get_predictor, predictor_name_for_mode  # noqa: E402
from isegm.jobs.noc import (TABLE_METRICS, aggregate, build_eval_dataset, evaluate_noc,  # noqa: E402
                            write_table)
from isegm.jobs.training import (BudgetError, add_budget_arguments, add_run_arguments,  # noqa: E402
                                 budget_from_args, check_recipe_changes, load_recipe,
                                 train_config)
from isegm.model import load_is_model  # noqa: E402
from isegm.utils.config import ConfigError, ConfigPathError, load_config  # noqa: E402
from isegm.utils.log import logger, setup_logging  # noqa: E402
from isegm.utils.serialization import CheckpointError  # noqa: E402
from isegm.utils.vis import plot_miou_curves  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "iglr_cpu" / "segformerB0_S2_synthetic.py"
DEFAULT_STEPS = 600
# --quick: a few steps of batch 4 and a tiny validation set; evaluation on a few objects.
QUICK = {"steps": 4, "epoch_steps": 2, "batch_size": 4, "eval_samples": 3, "n_clicks": 6,
         "num_vis": 2}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="main_job.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=str, default=str(DEFAULT_MODEL),
                   help="config module to train (built on isegm.engine.recipe)")
    add_budget_arguments(p)
    add_run_arguments(p)
    p.add_argument("--eval-samples", type=int, default=40,
                   help="objects evaluated per dataset (GrabCut has 50)")
    p.add_argument("--n-clicks", type=int, default=20, help="clicks per object (N of NoC)")
    p.add_argument("--datasets", type=str, default=None,
                   help="comma-separated evaluation datasets (default: Synthetic, plus GrabCut "
                        "when GRABCUT_PATH is an existing folder)")
    p.add_argument("--num-vis", type=int, default=4,
                   help="prediction visualisations per dataset (trained model)")
    p.add_argument("--skip-untrained", action="store_true",
                   help="do not evaluate the untrained network as the reference row")
    p.add_argument("--exp-name", type=str, default="main_job", help="experiment folder suffix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['steps']} steps, {QUICK['eval_samples']} objects, "
                        f"{QUICK['n_clicks']} clicks")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(None)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        paths = load_config(args.config)
        if args.quick:
            if args.steps is None and args.epochs is None and args.minutes is None:
                args.steps = QUICK["steps"]
            args.epoch_steps = QUICK["epoch_steps"]
            args.batch_size = args.batch_size or QUICK["batch_size"]
            args.eval_samples = min(args.eval_samples, QUICK["eval_samples"])
            args.n_clicks = min(args.n_clicks, QUICK["n_clicks"])
            args.num_vis = min(args.num_vis, QUICK["num_vis"])
        budget = budget_from_args(args, DEFAULT_STEPS)
        if args.eval_samples < 1 or args.n_clicks < 1:
            raise BudgetError("--eval-samples and --n-clicks must be >= 1")
        recipe = load_recipe(Path(args.model))
        if args.datasets:
            names = [d.strip() for d in args.datasets.split(",") if d.strip()]
            from isegm.data.datasets import DATASETS
            unknown = [n for n in names if n not in DATASETS]
            if unknown:
                raise BudgetError(f"--datasets: unknown dataset(s) {', '.join(unknown)}; known: "
                                  f"{', '.join(DATASETS.names())}")
        else:
            names = ["Synthetic"]
            grabcut = paths.resolve("GRABCUT_PATH")
            if grabcut.is_dir():
                names.append("GrabCut")
            else:
                logger.info(f"GrabCut not evaluated: GRABCUT_PATH={grabcut} is not a folder")
        synthetic_size = tuple(recipe.val_dataset_kwargs.get("image_size", (128, 128)))
        datasets = [build_eval_dataset(n, paths, synthetic_size, args.eval_samples) for n in names]
        recipe_changes = check_recipe_changes(
            json.loads(args.recipe_override) if args.recipe_override else {})
        if args.quick:
            recipe_changes.update({"val_dataset_kwargs": {**recipe.val_dataset_kwargs,
                                                          "num_samples": 4},
                                   "image_dump_interval": 2})

        logger.info(f"[1/3] training {Path(args.model).stem} ({budget.describe()})")
        run = train_config(Path(args.model), paths, budget, seed=args.seed,
                           exp_name=args.exp_name, workers=args.workers,
                           batch_size=args.batch_size, recipe_changes=recipe_changes,
                           trust_checkpoint=args.trust_checkpoint)
    except (BudgetError, CheckpointError, ConfigError, ConfigPathError, DatasetError,
            ExperimentError, KeyError, json.JSONDecodeError) as e:
        # KeyError's str() is the repr of its message: print the message itself.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"main_job.py: error: {message}", file=sys.stderr)
        return 2

    out = run.exp_root / "evaluation"
    trained = load_is_model(run.checkpoint, "cpu")
    models = [("trained", trained)]
    if not args.skip_untrained:
        models.insert(0, ("untrained", run.initial_model))
    logger.info(f"[2/3] NoC evaluation ({args.n_clicks} clicks) of {', '.join(m for m, _ in models)}"
                f" on {', '.join(names)}")
    results = []
    for dataset in datasets:
        for label, model in models:
            predictor = get_predictor(predictor_name_for_mode("NoBRS", model), model, "cpu")
            results.append(evaluate_noc(
                predictor, dataset, label=label, n_clicks=args.n_clicks,
                max_samples=args.eval_samples, vis_dir=out / "vis",
                num_vis=args.num_vis if label == "trained" else 0, seed=args.seed))

    logger.info("[3/3] writing the results")
    rows = aggregate(results)
    title = (f"{Path(args.model).stem}: {run.steps} steps, {run.wall_s / 60:.1f} min of training, "
             f"{args.n_clicks} clicks per object")
    tables = write_table(rows, out / "noc_table", title=title, metrics=("NoC@80",) + TABLE_METRICS)
    plot = plot_miou_curves(rows, out / "miou_vs_clicks.png", title=title)
    vis = sorted((out / "vis").glob("*.png"))
    total = time.perf_counter() - start
    print(f"\n{title}\n")
    print(tables["md"].read_text(encoding="utf-8").split("\n", 2)[-1])
    print(f"experiment folder : {run.exp_root}")
    print(f"checkpoint        : {run.checkpoint}")
    print(f"NoC table         : {tables['md']}  ({tables['csv'].name}, {tables['json'].name})")
    print(f"mIoU-vs-clicks    : {plot}")
    print(f"visualisations    : {out / 'vis'} ({len(vis)} files)")
    print(f"training log      : {run.exp_root / 'train_log.txt'}")
    print(f"total time        : {total / 60:.1f} min (training {run.wall_s / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
