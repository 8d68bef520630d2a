"""Network-only cost of one IGLR click: parameters, FLOPs and median CPU latency.

    .venv/bin/python scripts/benchmark_model.py [--threads 2] [--runs 15] [--variants mit_b0 mit_b3]

For each backbone variant and pipeline, with IGA on (all stages, all terms) and off (input
interaction embedding only), the script measures, batch 1, random weights, eval mode, inside
`torch.inference_mode()`:
- coarse: `forward_coarse` on a 256x256 input with 3 clicks and a previous mask;
- refine: `forward_refine` on 256x256 crops (decoder feature crop at 64x64);
- roi: the three `roi_align` calls that produce the refiner inputs from a 480x854 image.
FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts matrix multiplies,
convolutions and attention as 2 FLOPs per multiply-accumulate and ignores element-wise ops
(normalisation, activations, interpolation); GMAC = GFLOP / 2. Latency is the median (and the
min-max spread) of `--runs` timed runs after 3 warm-up runs. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch.utils.flop_counter import FlopCounterMode


from isegm.model import IGLRModel, roi_align  # noqa: E402


def _time(fn: Callable[[], object], runs: int) -> Dict[str, float]:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _flops(fn: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def bench(backbone: str, pipeline: str, iga: bool, runs: int) -> Dict[str, object]:
    torch.manual_seed(0)
    model = IGLRModel(backbone=backbone, pipeline=pipeline,
                      iga_stages=(0, 1, 2, 3) if iga else ()).eval()
    if iga:  # non-zero coefficients, as after training
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".iga_" in name:
                    p.normal_(0, 0.5)
    s = model.refine_size
    image = torch.rand(1, 3, 256, 256)
    points = torch.tensor([[[100.0, 120.0, 0], [140.0, 90.0, 1], [-1, -1, -1],
                            [30.0, 200.0, 2], [-1, -1, -1], [-1, -1, -1]]])
    prev = (torch.rand(1, 1, 256, 256) > 0.5).float()
    crop = torch.rand(1, 3, s, s)
    coarse_crop = torch.randn(1, 1, s, s)
    feature_crop = torch.randn(1, model.feature_channels, s // 4, s // 4)
    full = torch.rand(1, 3, 480, 854)
    full_logits = torch.randn(1, 1, 480, 854)
    feature = torch.randn(1, model.feature_channels, 64, 64)
    rois = torch.tensor([[0, 300.0, 120.0, 520.0, 330.0]])

    def coarse():
        return model.forward_coarse(image, points, prev)

    def refine():
        return model.forward_refine(crop, points, coarse_crop, feature_crop)

    def roi():
        roi_align(full, rois, s)
        roi_align(full_logits, rois, s)
        roi_align(feature, rois, s // 4, spatial_scale=64 / 854)

    with torch.inference_mode():
        row = {"model": f"{backbone.replace('mit_', '').upper()}-{pipeline.upper()}",
               "iga": "on" if iga else "off",
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "coarse_gflop": _flops(coarse), "refine_gflop": _flops(refine),
               "coarse_ms": _time(coarse, runs), "refine_ms": _time(refine, runs),
               "roi_ms": _time(roi, runs)}
    return row


def main(argv: List[str] | None = None) -> List[Dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=["mit_b0", "mit_b3"])
    parser.add_argument("--pipelines", nargs="+", default=["s2"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [bench(v, p, iga, args.runs) for v in args.variants for p in args.pipelines
            for iga in (True, False)]
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, median of {args.runs} "
          f"runs [min-max]; FLOPs: FlopCounterMode, 2 per MAC, matmul/conv/attention only\n")
    print("| model | IGA | params (M) | coarse 256² GFLOP | refine 256² GFLOP | coarse ms | "
          "refine ms | roi_align ms | total ms | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = r["coarse_ms"]["median"] + r["refine_ms"]["median"] + r["roi_ms"]["median"]
        gflop = r["coarse_gflop"] + r["refine_gflop"]

        def fmt(t):
            return f"{t['median']:.1f} [{t['min']:.0f}-{t['max']:.0f}]"
        print(f"| {r['model']} | {r['iga']} | {r['params_m']:.2f} | {r['coarse_gflop']:.2f} | "
              f"{r['refine_gflop']:.2f} | {fmt(r['coarse_ms'])} | {fmt(r['refine_ms'])} | "
              f"{fmt(r['roi_ms'])} | {total:.1f} | {gflop / total * 1000:.0f} |")
    return rows


if __name__ == "__main__":
    main()
