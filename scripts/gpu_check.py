"""One short check of the CUDA code path, for the first run on a GPU machine (a few minutes).

    python scripts/gpu_check.py                          # on CUDA
    python scripts/gpu_check.py --json gpu_check.json    # also write the summary as JSON
    python scripts/gpu_check.py --device cpu --ddp       # the same code on the CPU (gloo)

Checks, each reported in one summary:
  torch       the installed torch against the minimum stated in requirements.txt;
  train       a few training steps of a B0 model on Synthetic data (mixed precision on CUDA):
              finite loss, steps skipped by GradScaler, seconds per step;
  ddp         two processes (nccl with 2+ GPUs; gloo with --device cpu --ddp) take the same
              steps through DistributedDataParallel (find_unused_parameters=False): the ranks'
              weights must agree;
  eval_click  one evaluation click of the IGLR predictor on the device and on the CPU: the
              probability maps must agree within --tolerance;
  per_click   the predictor's seconds per click on the device over --clicks clicks.

The model is a random B0 unless --checkpoint names an IGLR checkpoint. Exit status 0 when every
check that ran passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from isegm.engine import distributed as du  # noqa: E402
from isegm.engine import recipe  # noqa: E402
from isegm.engine.distributed import DistInfo  # noqa: E402
from isegm.engine.experiment import ExperimentPaths  # noqa: E402
from isegm.engine.runconfig import RunConfig  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402
from isegm.utils.log import logger, setup_logging  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--ddp", action="store_true",
                   help="with --device cpu: run the two-process check with gloo (on CUDA it "
                        "runs whenever two GPUs are visible)")
    p.add_argument("--checkpoint", type=str, default=None,
                   help="IGLR checkpoint for the evaluation checks (default: a random B0)")
    p.add_argument("--steps", type=int, default=4, help="training steps (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=4, help="training batch (global for ddp)")
    p.add_argument("--crop", type=int, default=256, help="training crop size")
    p.add_argument("--image-size", type=int, default=480, help="evaluation image side")
    p.add_argument("--clicks", type=int, default=10, help="clicks timed for per_click")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="largest |p_device - p_cpu| allowed after one click")
    p.add_argument("--json", type=str, default=None, help="also write the summary here")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "crop", "image_size", "clicks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up)")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _recipe(crop: int, batch: int) -> recipe.Recipe:
    """B0 on Synthetic images of side crop + 32, with the refiner and one click round."""
    side = crop + 32
    return recipe.SYNTHETIC_CPU.replace(
        train_dataset_kwargs={"num_samples": 64, "image_size": (side, side), "split": "train"},
        val_dataset="", crop_size=(crop, crop), batch_size=batch, pretrained=False,
        use_amp=True, max_num_next_clicks=1, image_dump_interval=0, log_interval=1,
        model_kwargs={"refine_size": max(16, crop // 4), "drop_path_rate": 0.0})


def _trainer(device: torch.device, dist: DistInfo, exp_root: Path, rec: recipe.Recipe):
    paths = ExperimentPaths.at(exp_root)
    paths.make_dirs()
    cfg = RunConfig(config_path=Path(__file__), paths=load_config(), batch_size=rec.batch_size,
                    workers=0, cpu=device.type == "cpu", dist=dist, exp=paths)
    trainset, _ = recipe.build_datasets(cfg, rec)
    model, model_cfg = recipe.init_model(cfg, rec)
    trainer = recipe.make_trainer(model, cfg, model_cfg, rec, trainset, None)
    trainer._seed_epoch(0)
    trainer.net.train()
    return trainer


def _steps(trainer, steps: int) -> tuple[list[float], list[float]]:
    """(losses, seconds) of `steps` training steps."""
    losses, times = [], []
    batches = iter(trainer.train_loader)
    for _ in range(steps):
        batch = next(batches)
        _sync(trainer.device)
        start = time.perf_counter()
        loss, _, _, _ = trainer.train_step(batch)
        _sync(trainer.device)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return losses, times


def check_torch() -> dict[str, Any]:
    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    stated = re.search(r"any torch >= (\d+)\.(\d+)", text)
    minimum = (int(stated[1]), int(stated[2])) if stated else (0, 0)
    installed = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    return {"ok": installed >= minimum, "version": torch.__version__,
            "minimum": f"{minimum[0]}.{minimum[1]}", "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


def check_train(device: torch.device, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    trainer = _trainer(device, DistInfo(device=device), tmp / "train",
                       _recipe(args.crop, args.batch_size))
    losses, times = _steps(trainer, args.steps)
    finite = [x for x in losses if np.isfinite(x)]
    out = {"ok": bool(finite), "amp": trainer.use_amp, "losses": losses,
           "skipped_steps": trainer.skipped_steps_total(),
           "grad_scale": trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None,
           "s_per_step": statistics.median(times[1:])}
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return out


def _ddp_worker(cpu: bool, result_file: str, args: argparse.Namespace) -> None:
    """Body of each of the two processes of `check_ddp`."""
    dist = du.init_distributed(cpu, [])
    if cpu:  # the two processes share the cores, as in train.py --cpu --ngpus=2
        torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    try:
        du.seed_everything(0)
        rec = _recipe(args.crop, args.batch_size)
        trainer = _trainer(dist.device, dist, Path(result_file).parent / "ddp", rec)
        losses, times = _steps(trainer, 2)
        params = torch.cat([p.detach().double().flatten() for p in trainer.net_module.parameters()])
        gathered: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, params.cpu())
        diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
        if dist.is_main:
            Path(result_file).write_text(json.dumps({
                "ok": diff == 0.0 and all(np.isfinite(losses)), "backend": dist.backend,
                "world_size": dist.world_size, "max_weight_diff_between_ranks": diff,
                "losses_rank0": losses, "s_per_step": times[-1]}))
    finally:
        du.cleanup_distributed()


def check_ddp(device: torch.device, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    if device.type == "cuda":
        if torch.cuda.device_count() < 2:
            return {"ok": None, "skipped": f"{torch.cuda.device_count()} GPU visible, 2 needed"}
        cpu = False
    elif args.ddp:
        cpu = True
    else:
        return {"ok": None, "skipped": "the CPU run checks ddp only with --ddp"}
    if args.batch_size % 2:
        return {"ok": False, "error": f"--batch-size {args.batch_size} is odd: 2 processes"}
    result = tmp / "ddp_result.json"
    du.spawn(_ddp_worker, 2, (cpu, str(result), args))
    return json.loads(result.read_text())


def _eval_model(args: argparse.Namespace) -> torch.nn.Module:
    from isegm.model import IGLRModel, load_is_model
    if args.checkpoint:
        return load_is_model(args.checkpoint, "cpu")
    torch.manual_seed(0)
    return IGLRModel(**_recipe(args.crop, args.batch_size).model_params()).eval()


def _eval_sample(args: argparse.Namespace):
    from isegm.jobs.noc import build_eval_dataset
    dataset = build_eval_dataset("Synthetic", load_config(), (args.image_size, args.image_size), 4)
    return dataset.get_sample(0)


def _predictor(model: torch.nn.Module, device: torch.device):
    from isegm.inference.predictors import get_predictor, predictor_name_for_mode
    return get_predictor(predictor_name_for_mode("NoBRS", model), copy.deepcopy(model), device,
                         with_flip=True)


def check_eval_click(device: torch.device, model: torch.nn.Module, sample) -> dict[str, Any]:
    from isegm.inference.evaluation import evaluate_sample
    probs = {}
    for name, dev in (("cpu", torch.device("cpu")), ("device", device)):
        _, ious, p = evaluate_sample(sample.image, sample.gt_mask, _predictor(model, dev),
                                     max_iou_thr=2.0, max_clicks=1)
        probs[name] = (p, float(ious[0]))
    (p_cpu, iou_cpu), (p_dev, iou_dev) = probs["cpu"], probs["device"]
    diff = float(np.abs(p_cpu.astype(np.float64) - p_dev).max())
    a, b = p_cpu > 0.49, p_dev > 0.49
    union = int((a | b).sum())
    return {"max_abs_diff": diff, "mask_agreement_iou": (a & b).sum() / union if union else 1.0,
            "iou_cpu": iou_cpu, "iou_device": iou_dev, "shape": list(p_dev.shape)}


def check_per_click(device: torch.device, model: torch.nn.Module, sample,
                    clicks: int) -> dict[str, Any]:
    from isegm.inference.evaluation import evaluate_sample
    predictor = _predictor(model, device)
    evaluate_sample(sample.image, sample.gt_mask, predictor, max_iou_thr=2.0, max_clicks=2)
    _sync(device)
    stats: dict[str, float] = {}
    start = time.perf_counter()
    _, ious, _ = evaluate_sample(sample.image, sample.gt_mask, predictor, max_iou_thr=2.0,
                                 max_clicks=clicks, stats=stats)
    _sync(device)
    wall = time.perf_counter() - start
    return {"ok": True, "clicks": int(stats["clicks"]),
            "s_per_click": stats["predictor_s"] / stats["clicks"],
            "wall_s_per_click": wall / stats["clicks"], "iou_last": float(ious[-1]),
            "image": list(sample.image.shape[:2])}


def _run(name: str, fn: Callable[[], dict[str, Any]], summary: dict[str, Any]) -> None:
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # a failing check is reported, the others still run
        result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc(limit=6)}
    result["seconds"] = round(time.perf_counter() - start, 2)
    summary["checks"][name] = result


def _describe(name: str, result: dict[str, Any]) -> str:
    status = {True: "PASS", False: "FAIL", None: "SKIP"}[result.get("ok")]
    shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()
             if k not in ("ok", "traceback")}
    return f"  {name:<10} {status}  " + ", ".join(f"{k}={v}" for k, v in shown.items())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(None)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check.py: error: --device {args.device} but no CUDA device is present "
              f"(use --device cpu to check the code path on the CPU)", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "checks": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp_dir:
        tmp = Path(tmp_dir)
        _run("torch", check_torch, summary)
        _run("train", lambda: check_train(device, args, tmp), summary)
        _run("ddp", lambda: check_ddp(device, args, tmp), summary)
        model, sample = _eval_model(args), _eval_sample(args)

        def eval_click() -> dict[str, Any]:
            result = check_eval_click(device, model, sample)
            result["ok"] = result["max_abs_diff"] <= args.tolerance
            return result

        _run("eval_click", eval_click, summary)
        _run("per_click", lambda: check_per_click(device, model, sample, args.clicks), summary)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["ok"] = all(r.get("ok") is not False for r in summary["checks"].values())
    lines = [f"gpu_check: {'PASS' if summary['ok'] else 'FAIL'} on {summary['device']} "
             f"({summary['device_name']}) in {summary['seconds']} s"]
    lines += [_describe(name, result) for name, result in summary["checks"].items()]
    logger.info("\n".join(lines))
    for result in summary["checks"].values():
        if "traceback" in result:
            logger.error(result["traceback"])
    print(json.dumps(summary, default=str))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
