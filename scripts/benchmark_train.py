"""Training throughput on this machine: samples/s and seconds per step, split into data,
forward, backward (+ optimizer step) and the no-gradient click rounds of iterative training.

    python scripts/benchmark_train.py                         # B0-S2 and B3-S2, batch 8, 256x256, CPU
    python scripts/benchmark_train.py --backbones mit_b0 --steps 5 --crop 320
    python scripts/benchmark_train.py --device cuda           # on a GPU (mixed precision)

Data comes from the Synthetic dataset through the real training pipeline (object-centred crop,
flip, colour jitter, multi-point sampler) in the main process, so "data" is the cost of one
batch without loader workers. The expected step adds the mean number of click rounds of the
recipe (U{0..3}: 1.5 rounds).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from isegm.engine import recipe  # noqa: E402
from isegm.engine.distributed import DistInfo  # noqa: E402
from isegm.engine.experiment import ExperimentPaths  # noqa: E402
from isegm.engine.interaction import crop_refine_targets  # noqa: E402
from isegm.engine.losses import compute_losses  # noqa: E402
from isegm.engine.runconfig import RunConfig  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402
from isegm.utils.log import setup_logging  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(backbone: str, batch: int, crop: int, steps: int, warmup: int,
              device: torch.device, workdir: Path) -> dict[str, float]:
    rec = recipe.SYNTHETIC_CPU.replace(
        backbone=backbone, crop_size=(crop, crop), num_max_points=24, batch_size=batch,
        model_kwargs={"refine_size": 256, "drop_path_rate": 0.1},
        train_dataset_kwargs={"num_samples": 64, "image_size": (crop + crop // 4,) * 2,
                              "split": "train"},
        val_dataset=None, lr=5e-4, backbone_lr_mult=0.1, use_amp=True, image_dump_interval=0)
    paths = ExperimentPaths.at(workdir / backbone)
    paths.make_dirs()
    cfg = RunConfig(config_path=Path(__file__), paths=load_config(), batch_size=batch, workers=0,
                    cpu=device.type == "cpu", dist=DistInfo(device=device), exp=paths)
    trainset, _ = recipe.build_datasets(cfg, rec)
    model, model_cfg = recipe.init_model(cfg, rec)
    trainer = recipe.make_trainer(model, cfg, model_cfg, rec, trainset, None)
    trainer._seed_epoch(0)
    trainer.net.train()
    loader = iter(trainer.train_loader)
    times = {"data": [], "forward": [], "backward": [], "click_round": []}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch_data = trainer._prepare_batch(next(loader))
        _sync(device)
        t1 = time.perf_counter()
        images, gt, points = batch_data["images"], batch_data["instances"], batch_data["points"]
        # one no-gradient click round (eval forward + the rule-53 click per sample)
        points, prev = trainer._interactive_rounds(images, points, gt, num_rounds=1)
        _sync(device)
        t2 = time.perf_counter()
        boxes = trainer.focus_sampler(gt, points, trainer.rng).to(device)
        batch_data["instances_crop"], batch_data["boundary_crop"] = crop_refine_targets(
            gt, boxes, trainer.refine_size, trainer.refine_band_ratio)
        trainer.optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=trainer.use_amp):
            outputs = trainer.net(images, points, prev, boxes)
            loss, _ = compute_losses(trainer.loss_cfg, outputs, batch_data)
        _sync(device)
        t3 = time.perf_counter()
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optim)
        trainer.scaler.update()
        _sync(device)
        t4 = time.perf_counter()
        if i >= warmup:
            times["data"].append(t1 - t0)
            times["click_round"].append(t2 - t1)
            times["forward"].append(t3 - t2)
            times["backward"].append(t4 - t3)
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    mean["step"] = mean["data"] + mean["forward"] + mean["backward"]
    mean["step_with_rounds"] = mean["step"] + 1.5 * mean["click_round"]
    mean["samples_per_s"] = batch / mean["step"]
    mean["samples_per_s_with_rounds"] = batch / mean["step_with_rounds"]
    return mean


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b3"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    setup_logging(None, enabled=False)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"crop {args.crop}x{args.crop}, refine 256x256, {args.steps} timed steps after "
          f"{args.warmup} warm-up")
    header = (f"{'model':<8} {'data s':>8} {'fwd s':>8} {'bwd s':>8} {'s/step':>8} "
              f"{'samples/s':>10} {'round s':>8} {'s/step+1.5r':>12} {'samples/s':>10}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            r = benchmark(backbone, args.batch_size, args.crop, args.steps, args.warmup, device,
                          Path(tmp))
            name = backbone.replace("mit_b", "B") + "-S2"
            rows.append(f"{name:<8} {r['data']:>8.3f} {r['forward']:>8.3f} {r['backward']:>8.3f} "
                        f"{r['step']:>8.3f} {r['samples_per_s']:>10.2f} {r['click_round']:>8.3f} "
                        f"{r['step_with_rounds']:>12.3f} {r['samples_per_s_with_rounds']:>10.2f}")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
