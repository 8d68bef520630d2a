"""Train a config module under a fixed budget (optimisation steps or wall-clock minutes).

    run = train_config(Path("models/iglr_cpu/segformerB0_S2_synthetic.py"), load_config(),
                       Budget(steps=400), seed=0, exp_name="main_job")
    run.checkpoint      # EXPS_PATH/iglr_cpu/segformerB0_S2_synthetic/000_main_job/checkpoints/last_checkpoint.pth
    run.initial_model   # the same network before training (the "untrained" reference)

The config module must build on `isegm.engine.recipe` (define `RECIPE`). Its schedule is replaced
by the budget: short epochs of `Budget.epoch_steps` steps (validation and checkpoints after each),
and one learning-rate decay by the recipe's `lr_gamma` after `Budget.decay_at` of the budget —
at an epoch boundary for a step budget (MultiStepLR milestone), after that fraction of the wall
time for a time budget. Everything else (data, losses, iterative clicks, refiner crops) is the
recipe's, run by the one `ISTrainer`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch.nn as nn

from isegm.engine import distributed as du
from isegm.engine import recipe as recipes
from isegm.engine.launch import LaunchError, load_config_module
from isegm.engine.recipe import Recipe
from isegm.engine.runconfig import RunConfig
from isegm.utils.config import Config
from isegm.utils.log import logger

MAX_EPOCHS_FOR_TIME_BUDGET = 1_000_000


class BudgetError(ValueError):
    """An unusable budget or config module; raised before anything is created."""


@dataclass(frozen=True)
class Budget:
    """Exactly one of `steps` (optimisation steps) or `minutes` (wall-clock training time)."""

    steps: Optional[int] = None
    minutes: Optional[float] = None
    epoch_steps: int = 25        # steps per (short) epoch: validation + checkpoint after each
    decay_at: float = 0.8        # fraction of the budget after which lr *= recipe.lr_gamma

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise BudgetError(f"give exactly one budget: steps ({self.steps}) or minutes "
                              f"({self.minutes})")
        if self.steps is not None and self.steps <= 0:
            raise BudgetError(f"the step budget must be > 0, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise BudgetError(f"the time budget must be > 0 minutes, got {self.minutes}")
        if self.epoch_steps <= 0:
            raise BudgetError(f"epoch_steps must be > 0, got {self.epoch_steps}")
        if not 0.0 < self.decay_at <= 1.0:
            raise BudgetError(f"decay_at must be in (0, 1], got {self.decay_at}")

    def describe(self) -> str:
        what = f"{self.steps} steps" if self.steps is not None else f"{self.minutes:g} minutes"
        return f"{what} (epochs of {self.epoch_steps} steps, lr decay after {self.decay_at:.0%})"


@dataclass
class TrainedRun:
    """What `train_config` produced."""

    config_path: Path
    exp_root: Path
    checkpoint: Path                # the final model (last_checkpoint.pth)
    best_checkpoint: Optional[Path]  # the best validation IoU's (best_checkpoint.pth), if any
    initial_model: nn.Module        # the network as initialised, before any step (eval mode)
    recipe: Recipe                  # the recipe actually trained (budget applied)
    steps: int
    epochs: int
    wall_s: float
    summary: dict[str, float] = field(default_factory=dict)


def load_recipe(config_path: Path) -> Recipe:
    """The `RECIPE` of a config module; errors name the file."""
    try:
        module = load_config_module(Path(config_path))
    except LaunchError as e:
        raise BudgetError(str(e)) from None
    rec = getattr(module, "RECIPE", None)
    if not isinstance(rec, Recipe):
        raise BudgetError(f"config module '{config_path}' defines no RECIPE (an "
                          f"isegm.engine.recipe.Recipe); budgeted runs need one")
    return rec


def check_recipe_changes(changes: Any) -> dict[str, Any]:
    """`changes` if it is a dict of Recipe field names, else BudgetError naming the bad ones."""
    if not isinstance(changes, dict):
        raise BudgetError(f"recipe changes must be a JSON object / dict, got {changes!r}")
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise BudgetError(f"unknown recipe field(s) {unknown}; known: {', '.join(sorted(known))}")
    return changes


def budgeted_recipe(rec: Recipe, budget: Budget, batch_size: int) -> Recipe:
    """The recipe with its schedule replaced by the budget's short epochs (the recipe's warm-up
    is kept)."""
    if budget.steps is not None:
        epochs = math.ceil(budget.steps / budget.epoch_steps)
        steps_per_epoch = math.ceil(budget.steps / epochs)
        milestone = round(budget.decay_at * epochs)
        milestones = (milestone,) if 0 < milestone < epochs else ()
    else:
        epochs, steps_per_epoch, milestones = MAX_EPOCHS_FOR_TIME_BUDGET, budget.epoch_steps, ()
    return rec.replace(epochs=epochs, epoch_len=steps_per_epoch * batch_size,
                       milestones=milestones, checkpoint_interval=0)


def _set_up(config_path: Path, paths: Config, budget: Budget, seed: int, exp_name: str,
            workers: int, batch_size: Optional[int],
            recipe_changes: Optional[dict[str, Any]], trust_checkpoint: bool = False):
    """(run config, budgeted recipe, datasets, model, model config), seeded as a run starts."""
    rec = load_recipe(config_path)
    if recipe_changes:
        rec = rec.replace(**check_recipe_changes(recipe_changes))
    batch_size = int(batch_size or rec.batch_size)
    rec = budgeted_recipe(rec, budget, batch_size)
    cfg = RunConfig(config_path=config_path, paths=paths, batch_size=batch_size, workers=workers,
                    seed=seed, exp_name=exp_name, trust_checkpoint=trust_checkpoint, cpu=True)
    du.seed_everything(du.process_seed(seed, 0))
    datasets = recipes.build_datasets(cfg, rec)
    model, model_cfg = recipes.init_model(cfg, rec)
    return cfg, rec, datasets, model, model_cfg


def initial_model(config_path: Path, paths: Config, *, seed: int = 0,
                  batch_size: Optional[int] = None,
                  recipe_changes: Optional[dict[str, Any]] = None,
                  trust_checkpoint: bool = False) -> nn.Module:
    """The network `train_config` starts from with this seed (eval mode), rebuilt without
    training: the "untrained" reference of an earlier run. Needs the recipe's datasets, as
    training does (they are built first there, so the random state matches)."""
    _, _, _, model, _ = _set_up(Path(config_path), paths, Budget(steps=1), seed, "", 0,
                                batch_size, recipe_changes, trust_checkpoint)
    return model.eval()


def train_config(config_path: Path, paths: Config, budget: Budget, *, seed: int = 0,
                 exp_name: str = "", workers: int = 0, batch_size: Optional[int] = None,
                 recipe_changes: Optional[dict[str, Any]] = None,
                 trust_checkpoint: bool = False) -> TrainedRun:
    """Train the config module's recipe on the CPU under `budget` in a new experiment folder.

    recipe_changes: fields of the recipe to replace first (e.g. a smaller crop for tests).
    trust_checkpoint: accept ImageNet weights that need full unpickling (--trust-checkpoint).
    Datasets are built first, so a missing dataset path fails before any folder is created.
    """
    config_path = Path(config_path)
    cfg, rec, datasets, model, model_cfg = _set_up(config_path, paths, budget, seed, exp_name,
                                                   workers, batch_size, recipe_changes,
                                                   trust_checkpoint)
    batch_size = cfg.batch_size
    untrained = copy.deepcopy(model).eval()
    trainer = recipes.make_trainer(
        model, cfg, model_cfg, rec, *datasets,
        extra_settings={"recipe": dataclasses.asdict(rec), "budget": budget.describe()})
    logger.info(f"training {config_path.stem} for {budget.describe()}, batch {batch_size}, "
                f"seed {seed}")
    start = time.perf_counter()
    decayed = False
    summary: dict[str, float] = {}
    epoch = 0
    for epoch in range(rec.epochs):
        summary = trainer.run_epoch(epoch)
        trainer.lr_scheduler.step()
        elapsed = time.perf_counter() - start
        done = epoch + 1 == rec.epochs
        if budget.minutes is not None:
            seconds = 60.0 * budget.minutes
            per_epoch = elapsed / (epoch + 1)
            done = elapsed + 0.5 * per_epoch >= seconds
            if not decayed and not done and elapsed >= budget.decay_at * seconds:
                for group in trainer.optim.param_groups:
                    group["lr"] *= rec.lr_gamma
                decayed = True
                logger.info(f"lr decayed x{rec.lr_gamma} after {elapsed:.0f} s: "
                            f"{trainer.current_lrs()}")
        trainer.save_checkpoints(epoch, epoch + 1 if done else rec.epochs, summary)
        if done:
            break
    wall = time.perf_counter() - start
    if trainer.writer is not None:
        trainer.writer.flush()
        trainer.writer.close()
    logger.info(f"trained {trainer.global_step} steps ({epoch + 1} epochs) in {wall:.0f} s")
    best = trainer.exp.checkpoints / "best_checkpoint.pth"
    return TrainedRun(config_path=config_path, exp_root=trainer.exp.root,
                      checkpoint=trainer.exp.checkpoints / "last_checkpoint.pth",
                      best_checkpoint=best if best.is_file() else None,
                      initial_model=untrained, recipe=rec, steps=trainer.global_step,
                      epochs=epoch + 1, wall_s=wall, summary=summary)


def add_budget_arguments(parser) -> None:
    """--steps / --epochs / --minutes (exclusive) and --epoch-steps on an argparse parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, default=None, help="training budget in optimisation steps")
    group.add_argument("--epochs", type=int, default=None,
                       help="training budget in epochs of --epoch-steps steps")
    group.add_argument("--minutes", type=float, default=None,
                       help="training budget in wall-clock minutes (stops at an epoch boundary)")
    parser.add_argument("--epoch-steps", type=int, default=25,
                        help="steps per epoch (validation and checkpoint after each)")


def add_run_arguments(parser) -> None:
    """--batch-size, --workers, --threads, --config, --recipe-override and --trust-checkpoint,
    shared by the job scripts."""
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, the number of cores)")
    parser.add_argument("--config", type=str, default=None, help="another configs.yml")
    parser.add_argument("--recipe-override", type=str, default=None,
                        help="JSON object of recipe fields to change for every run, e.g. "
                             "'{\"lr\": 5e-4}' or '{\"crop_size\": [64, 64]}'")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="accept checkpoints (the ImageNet weights of configs.yml, "
                             "--reevaluate's) that need full unpickling, which can run code "
                             "stored in the file: only for files from a trusted source")


def budget_from_args(args, default_steps: int) -> Budget:
    """The Budget of parsed --steps/--epochs/--minutes/--epoch-steps (default: `default_steps`)."""
    if args.minutes is not None:
        return Budget(minutes=args.minutes, epoch_steps=args.epoch_steps)
    if args.epochs is not None:
        if args.epochs <= 0:
            raise BudgetError(f"--epochs must be > 0, got {args.epochs}")
        return Budget(steps=args.epochs * args.epoch_steps, epoch_steps=args.epoch_steps)
    return Budget(steps=args.steps if args.steps is not None else default_steps,
                  epoch_steps=args.epoch_steps)
