"""ESTIMATED cost of the reference training configs on GPUs, from measurements on the CPU.

    python scripts/estimate_gpu_cost.py                                   # A100-class defaults
    python scripts/estimate_gpu_cost.py --peak-tflops 989 --utilization 0.1 0.3   # H100 SXM

Nothing here runs on a GPU. For MiT-B0 and MiT-B3 at the reference 256x256 crop and 256x256
refiner crop, on one batch of the training pipeline (the Synthetic dataset, through the real
trainer of `isegm/engine/recipe.py`), the script measures on the CPU:
- FLOPs per sample of one training step and of one no-gradient click round (rule 53), with
  `torch.utils.flop_counter.FlopCounterMode` (matmul / convolution / attention, 2 FLOPs per
  multiply-add; element-wise work is not counted). The step is its forward (coarse network,
  refiner, losses) times 3: the usual backward = 2 x forward, because the counter overcounts the
  backward of grouped (depthwise) convolutions by their number of groups;
- the bytes per sample that autograd saves for the backward pass under bf16 autocast (the
  activations that stay in memory), and the parameter count;
- the CPU time of the step (the measured CPU throughput, for comparison).
It then prints, per reference config (B0/B3 x SBD/COCO+LVIS, the batch and GPU count of its
docstring), the GPU compute time per epoch and for the whole schedule at `--utilization` of a
GPU whose dense bf16/fp16 peak is `--peak-tflops` (data loading, which may well be slower, is
measured by `scripts/benchmark.py data`), and the memory per GPU: fp32 weights, gradients
and Adam's two moments (16 bytes per parameter), saved activations of the per-GPU batch, and
`--overhead-gib` for the CUDA context and the allocator's cache. The mean number of click rounds
per step is 1.5 (t_max ~ U{0..3}).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Dict

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from isegm.engine import recipe  # noqa: E402
from isegm.engine.distributed import DistInfo  # noqa: E402
from isegm.engine.experiment import ExperimentPaths  # noqa: E402
from isegm.engine.interaction import crop_refine_targets  # noqa: E402
from isegm.engine.losses import compute_losses  # noqa: E402
from isegm.engine.runconfig import RunConfig  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402
from isegm.utils.log import setup_logging  # noqa: E402

# The reference configs (models/iglr/*.py): recipe, global batch, GPUs their docstrings assume.
CONFIGS = {
    "segformerB0_S2_sbd": (recipe.SBD, "mit_b0", 28, 2),
    "segformerB3_S2_sbd": (recipe.SBD, "mit_b3", 24, 2),
    "segformerB0_S2_cclvs": (recipe.COCO_LVIS, "mit_b0", 28, 2),
    "segformerB3_S2_cclvs": (recipe.COCO_LVIS, "mit_b3", 24, 2),
}
SBD_TRAIN_IMAGES = 8498   # an SBD epoch is the whole train list (epoch_len -1)
MEAN_CLICK_ROUNDS = 1.5


def measure(backbone: str, batch: int, workdir: Path) -> Dict[str, float]:
    """Per-sample GFLOP (step, click round), saved-activation MiB (bf16 autocast), parameters
    and CPU seconds per step, from one batch of `batch` samples on the CPU."""
    rec = recipe.SBD.replace(
        backbone=backbone, pretrained=False, train_dataset="Synthetic", val_dataset=None,
        train_dataset_kwargs={"num_samples": 2 * batch, "image_size": (320, 320),
                              "split": "train"}, min_object_area=30, use_amp=False,
        image_dump_interval=0)
    paths = ExperimentPaths.at(workdir / backbone)
    paths.make_dirs()
    cfg = RunConfig(config_path=Path(__file__), paths=load_config(), batch_size=batch, workers=0,
                    cpu=True, dist=DistInfo(device=torch.device("cpu")), exp=paths)
    trainset, _ = recipe.build_datasets(cfg, rec)
    model, model_cfg = recipe.init_model(cfg, rec)
    trainer = recipe.make_trainer(model, cfg, model_cfg, rec, trainset, None)
    trainer._seed_epoch(0)
    trainer.net.train()
    first = next(iter(trainer.train_loader))
    host = trainer._host_tensors(first)
    data = trainer._prepare_batch(first)

    counter = FlopCounterMode(display=False)
    with counter:
        prev = trainer._interactive_rounds(data, host, num_rounds=1)
    images, gt = data["images"], data["instances"]
    points = host["points"].to(images.device)
    round_flops = counter.get_total_flops()
    boxes = trainer.focus_sampler(gt, points, trainer.rng)
    data["instances_crop"], data["boundary_crop"] = crop_refine_targets(
        gt, boxes, trainer.refine_size, trainer.refine_band_ratio)

    def step() -> torch.Tensor:
        outputs = trainer.net(images, points, prev, boxes)
        loss, _ = compute_losses(trainer.loss_cfg, outputs, data)
        return loss

    counter = FlopCounterMode(display=False)
    with counter:
        loss = step()
    # backward = 2 x forward: FlopCounterMode counts a grouped convolution's backward as if it
    # were dense (64 x too much for a 64-channel depthwise one), which would swamp the total.
    step_flops = 3 * counter.get_total_flops()
    del loss

    saved: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        loss = step()
    del loss
    trainer.optim.zero_grad(set_to_none=True)
    start = time.perf_counter()
    step().backward()
    seconds = time.perf_counter() - start
    return {"step_gflop": step_flops / batch / 1e9, "round_gflop": round_flops / batch / 1e9,
            "act_mib": sum(saved.values()) / batch / 2 ** 20,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "cpu_s_per_sample": seconds / batch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peak-tflops", type=float, default=312.0,
                   help="the GPU's dense bf16/fp16 tensor peak (A100: 312, H100 SXM: 989)")
    p.add_argument("--utilization", type=float, nargs=2, default=(0.1, 0.3),
                   metavar=("LOW", "HIGH"), help="assumed fraction of the peak reached")
    p.add_argument("--overhead-gib", type=float, default=1.5,
                   help="CUDA context and allocator cache per GPU")
    p.add_argument("--batch", type=int, default=2, help="samples of the measured CPU batch")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging(None, enabled=False)
    with tempfile.TemporaryDirectory() as tmp:
        measured = {b: measure(b, args.batch, Path(tmp)) for b in ("mit_b0", "mit_b3")}
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s), batch {args.batch}, "
          f"256x256 crop, refiner 256x256\n")
    print("| backbone | params (M) | GFLOP/sample: step | click round | step + 1.5 rounds | "
          "saved activations (bf16), MiB/sample | CPU s/sample (step) | CPU GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for b, m in measured.items():
        total = m["step_gflop"] + MEAN_CLICK_ROUNDS * m["round_gflop"]
        print(f"| {b} | {m['params_m']:.2f} | {m['step_gflop']:.2f} | {m['round_gflop']:.2f} | "
              f"{total:.2f} | {m['act_mib']:.0f} | {m['cpu_s_per_sample']:.2f} | "
              f"{m['step_gflop'] / m['cpu_s_per_sample']:.1f} |")
    lo, hi = args.utilization
    print(f"\nESTIMATES (not measured on a GPU): {args.peak_tflops:.0f} TFLOP/s peak at "
          f"{lo:.0%}-{hi:.0%} utilization; memory = 16 B/param + activations x per-GPU batch + "
          f"{args.overhead_gib} GiB\n")
    print("| config | GPUs x batch/GPU | samples/epoch | PFLOP/epoch | GPU compute s/epoch | "
          "schedule (epochs) | GPU compute hours in all | GiB per GPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (rec, backbone, batch, gpus) in CONFIGS.items():
        m = measured[backbone]
        per_sample = (m["step_gflop"] + MEAN_CLICK_ROUNDS * m["round_gflop"]) * 1e9
        samples = rec.epoch_len if rec.epoch_len > 0 else SBD_TRAIN_IMAGES
        flops = per_sample * samples
        seconds = [flops / (args.peak_tflops * 1e12 * u * gpus) for u in (hi, lo)]
        hours = [t * rec.epochs / 3600 for t in seconds]
        per_gpu = batch // gpus
        gib = (16 * m["params_m"] * 1e6 + m["act_mib"] * 2 ** 20 * per_gpu) / 2 ** 30 \
            + args.overhead_gib
        print(f"| {name} | {gpus} x {per_gpu} | {samples} | {flops / 1e15:.1f} | "
              f"{seconds[0]:.1f}-{seconds[1]:.1f} | {rec.epochs} | {hours[0]:.2f}-{hours[1]:.2f} "
              f"| {gib:.1f} |")


if __name__ == "__main__":
    main()
