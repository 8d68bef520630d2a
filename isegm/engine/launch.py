"""Command-line entry of `train.py`: parse, check everything, then start one or N processes.

    python train.py models/iglr/segformerB3_S2_cclvs.py --ngpus=2 --batch-size=24
    python train.py models/iglr_cpu/segformerB0_S2_synthetic.py --cpu
    python train.py models/iglr_cpu/segformerB0_S2_synthetic.py --cpu --ngpus=2   # 2 gloo processes
    torchrun --nnodes=2 --nproc_per_node=4 train.py models/iglr/segformerB3_S2_cclvs.py

All checks (config module, arguments, devices, checkpoints, `configs.yml`) run before any work:
a bad argument fails in seconds with a message that names it, and creates no folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

import torch

from isegm.engine import distributed as du
from isegm.engine.experiment import ExperimentError, find_checkpoint, find_resume_exp, model_exp_dir
from isegm.engine.runconfig import RunConfig
from isegm.data.io import DatasetError
from isegm.model.pretrained import PretrainedLoadError
from isegm.utils.config import ConfigPathError, load_config
from isegm.utils.device import parse_gpus
from isegm.utils.log import logger, setup_logging
from isegm.utils.serialization import CheckpointError

REQUIRED_ATTRIBUTES = ("main", "init_model")
DEFAULT_WORKERS = 4


class LaunchError(Exception):
    """A command-line argument or the config module is unusable; nothing was started."""


# User errors (missing data, a bad checkpoint, ...): reported as one line, not a traceback.
EXPECTED_ERRORS = (LaunchError, ConfigPathError, DatasetError, CheckpointError, ExperimentError,
                   PretrainedLoadError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description="Train an IGLR interactive segmentation model from a "
        "config module (models/<family>/<name>.py defining init_model(cfg) and main(cfg)).")
    p.add_argument("model_path", type=str, help="path to the config module, e.g. "
                   "models/iglr/segformerB0_S2_sbd.py")
    p.add_argument("--exp-name", type=str, default="", help="suffix of the experiment folder name")
    p.add_argument("--workers", type=int, default=None,
                   help=f"data-loading processes per training process (default "
                        f"{DEFAULT_WORKERS}; capped at the CPU cores available to this process, "
                        f"{available_cpus()} here)")
    p.add_argument("--batch-size", type=int, default=-1,
                   help="global batch size over all processes (default: the config module's)")
    p.add_argument("--ngpus", type=int, default=1,
                   help="processes on this node (one per GPU; with --cpu, CPU processes with gloo)")
    p.add_argument("--gpus", "--gpu", dest="gpus", type=str, default="",
                   help="comma-separated GPU ids, e.g. 0,1 (sets --ngpus to their number)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU")
    p.add_argument("--resume-exp", type=str, default=None,
                   help="prefix of the experiment folder to continue, e.g. 003")
    p.add_argument("--resume-prefix", type=str, default="last",
                   help="checkpoint of that folder to resume from: last, best or an epoch (040)")
    p.add_argument("--start-epoch", type=int, default=None,
                   help="epoch to start from (default 0, or the one after the resumed checkpoint)")
    p.add_argument("--weights", type=str, default=None,
                   help="initial model weights (an IGLR checkpoint); optimizer state is not loaded")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="accept checkpoints (--weights, --resume-exp, the ImageNet weights) that "
                        "need full unpickling, which can run code stored in the file: only for "
                        "files from a trusted source (a warning names each such file)")
    p.add_argument("--seed", type=int, default=0, help="random seed (each process adds its rank)")
    p.add_argument("--epochs", type=int, default=None,
                   help="number of epochs, overriding the config module's schedule")
    p.add_argument("--config", type=str, default=None,
                   help="another configs.yml (dataset and experiment paths)")
    return p


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(requested: Optional[int]) -> int:
    """Data-loading workers per process: `requested` (default DEFAULT_WORKERS) capped at the
    cores available; more workers than cores only compete with the training process."""
    if requested is not None and requested < 0:
        raise LaunchError(f"--workers must be >= 0, got {requested}")
    cores = available_cpus()
    workers = DEFAULT_WORKERS if requested is None else requested
    if workers > cores:
        if requested is not None:
            logger.info(f"--workers={requested} capped at the {cores} CPU core(s) available")
        workers = cores
    return workers


def load_config_module(path: Path) -> ModuleType:
    """Import a config module from its file path; errors name the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"config module '{path}' does not exist")
    if path.suffix != ".py":
        raise LaunchError(f"config module '{path}' is not a .py file")
    name = f"iglr_config_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LaunchError(f"config module '{path}' cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" (line {last.lineno} of {last.filename})" if last else ""
        if isinstance(e, SyntaxError):
            where = f" (line {e.lineno} of {e.filename})"
        raise LaunchError(f"config module '{path}' failed to import: "
                          f"{type(e).__name__}: {e}{where}") from e
    missing = [a for a in REQUIRED_ATTRIBUTES if not callable(getattr(module, a, None))]
    if missing:
        raise LaunchError(f"config module '{path}' does not define {' and '.join(missing)}: a config "
                          f"module needs init_model(cfg) and main(cfg) (see models/iglr/)")
    return module


def make_run_config(argv: Optional[Sequence[str]] = None) -> tuple[RunConfig, ModuleType]:
    """Parse and check the arguments; raise LaunchError before anything is created."""
    args = build_parser().parse_args(argv)
    module_path = Path(args.model_path)
    module = load_config_module(module_path)
    try:
        paths = load_config(args.config)
    except Exception as e:
        raise LaunchError(f"--config: {e}") from e
    workers = resolve_workers(args.workers)
    if args.epochs is not None and args.epochs <= 0:
        raise LaunchError(f"--epochs must be > 0, got {args.epochs}")
    if args.start_epoch is not None and args.start_epoch < 0:
        raise LaunchError(f"--start-epoch must be >= 0, got {args.start_epoch}")
    try:
        gpu_ids = parse_gpus(args.gpus)
    except ValueError as e:
        raise LaunchError(str(e)) from None
    ngpus = len(gpu_ids) if gpu_ids else args.ngpus
    if ngpus < 1:
        raise LaunchError(f"--ngpus must be >= 1, got {args.ngpus}")
    use_cuda = not args.cpu
    torchrun = du.launched_by_torchrun()
    if use_cuda:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise LaunchError(f"{ngpus} GPU(s) requested but no CUDA device is present; add --cpu "
                              f"to train on the CPU (--cpu --ngpus={ngpus} runs {ngpus} gloo processes)")
        if not torchrun and ngpus > available:
            raise LaunchError(f"--ngpus={ngpus} requested but only {available} CUDA device(s) are present")
        bad = [g for g in gpu_ids if g < 0 or g >= available]
        if bad:
            raise LaunchError(f"--gpus {args.gpus}: ids {bad} do not exist ({available} CUDA device(s))")
    batch_size = args.batch_size
    if batch_size == -1:
        batch_size = int(getattr(module, "BATCH_SIZE", 0) or 0)
        if batch_size <= 0:
            raise LaunchError(f"--batch-size is not given and '{module_path}' defines no BATCH_SIZE")
    if batch_size <= 0:
        raise LaunchError(f"--batch-size must be > 0, got {batch_size}")
    world = int(os.environ.get("WORLD_SIZE", "1")) if torchrun else ngpus
    if batch_size % world != 0:
        raise LaunchError(f"--batch-size {batch_size} must be divisible by the number of processes "
                          f"({world}): each process loads batch_size / processes samples")
    weights = None
    if args.weights:
        weights = Path(args.weights)
    resume_checkpoint = None
    if args.resume_exp:
        if args.weights:
            raise LaunchError("--weights and --resume-exp exclude each other: a resumed run "
                              "continues from its own checkpoint")
        try:
            model_dir = model_exp_dir(paths.resolve("EXPS_PATH"), module_path)
            exp = find_resume_exp(model_dir, args.resume_exp)
            resume_checkpoint = find_checkpoint(exp.checkpoints, args.resume_prefix)
        except ExperimentError as e:
            raise LaunchError(str(e)) from None
    cfg = RunConfig(config_path=module_path, paths=paths, batch_size=batch_size,
                    workers=workers, seed=args.seed, exp_name=args.exp_name,
                    epochs=args.epochs, start_epoch=args.start_epoch, resume_exp=args.resume_exp,
                    resume_prefix=args.resume_prefix, resume_checkpoint=resume_checkpoint,
                    weights=weights, trust_checkpoint=args.trust_checkpoint, cpu=args.cpu,
                    gpu_ids=gpu_ids, ngpus=ngpus)
    if weights is not None:
        _check_weights_fit(module, cfg, weights, "--weights")
    elif resume_checkpoint is not None:
        _check_weights_fit(module, cfg, resume_checkpoint, "--resume-exp")
    return cfg, module


def _read_checkpoint(path: Path, flag: str, trust: bool) -> dict:
    from isegm.engine.checkpoint import read_checkpoint
    try:
        return read_checkpoint(path, trust=trust)
    except CheckpointError as e:
        raise LaunchError(f"{flag}: {e}") from None


def _check_weights_fit(module: ModuleType, cfg: RunConfig, path: Path, flag: str) -> None:
    """Build the config module's model (on the CPU, without pretrained weights: `cfg.weights` or
    `cfg.resume_checkpoint` is set) and check that the checkpoint's weights fit it key by key
    and shape by shape, so a mismatch fails here and not after the run folder exists."""
    from isegm.engine.checkpoint import check_weights_fit
    state = _read_checkpoint(path, flag, cfg.trust_checkpoint)
    try:
        model, _ = module.init_model(cfg)
    except Exception as e:
        raise LaunchError(f"{flag}: init_model of '{cfg.config_path}' failed while checking "
                          f"the checkpoint: {type(e).__name__}: {e}") from e
    try:
        check_weights_fit(model, state["state_dict"], str(path))
    except CheckpointError as e:
        raise LaunchError(f"{flag}: {e}") from None


def preflight(module: ModuleType, cfg: RunConfig) -> None:
    """Checks a config module's `main` would make first, run in the parent before spawning
    processes, so that a missing dataset is one line here instead of one traceback per process.

    A module may define `check(cfg)`; modules built on a `Recipe` (a `RECIPE` attribute) get
    their datasets built once (what `recipe.main` does first in each process).
    """
    check = getattr(module, "check", None)
    if callable(check):
        check(cfg)
        return
    from isegm.engine import recipe
    if isinstance(getattr(module, "RECIPE", None), recipe.Recipe):
        recipe.build_datasets(cfg, module.RECIPE)


def one_line(error: BaseException) -> str:
    """`Type: message` of an expected error; an error re-raised by a DataLoader worker carries
    the worker's traceback in its message, of which only the final message is kept."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        marker = f"{type(error).__name__}: "
        qualified = f"{type(error).__module__}.{marker}"
        tail = text.rsplit(qualified, 1) if qualified in text else text.rsplit(marker, 1)
        text = tail[-1].strip() + " (in a data-loading worker)"
    return f"{type(error).__name__}: {text}"


def _worker(cfg: RunConfig) -> None:
    """Body of each training process (the only one, a spawned one or a torchrun one)."""
    if du.launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        try:
            _run_worker(cfg)
        except EXPECTED_ERRORS as e:
            # One line from the first process; the others exit quietly with the same status.
            if int(os.environ.get("RANK", "0")) == 0:
                logger.error(one_line(e))
            raise SystemExit(2) from None
    else:
        _run_worker(cfg)


def _run_worker(cfg: RunConfig) -> None:
    cfg.dist = du.init_distributed(cfg.cpu, cfg.gpu_ids)
    setup_logging(None, enabled=cfg.dist.is_main)
    if cfg.dist.device.type == "cpu" and cfg.dist.distributed:
        # N processes share the cores: one thread each avoids oversubscription.
        torch.set_num_threads(max(1, torch.get_num_threads() // max(1, cfg.dist.world_size)))
    du.seed_everything(du.process_seed(cfg.seed, cfg.dist.rank))
    module = load_config_module(cfg.config_path)
    try:
        module.main(cfg)
    finally:
        du.cleanup_distributed()


def main(argv: Optional[Sequence[str]] = None) -> int:
    setup_logging(None)
    try:
        cfg, _ = make_run_config(argv)
    except LaunchError as e:
        logger.error(str(e))
        return 2
    try:
        if cfg.ngpus > 1 and not du.launched_by_torchrun():
            preflight(load_config_module(cfg.config_path), cfg)
            du.spawn(_worker, cfg.ngpus, (cfg,))
        else:
            _worker(cfg)
    except EXPECTED_ERRORS as e:
        # Expected user errors (missing data, bad checkpoint): a message, not a traceback.
        logger.error(one_line(e))
        return 2
    except du.SpawnedProcessFailed as e:
        # Status 2: the process logged its one-line error already.
        if e.exit_code != 2:
            logger.error(str(e))
        return e.exit_code if e.exit_code > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
