"""IGLR speed, one command with a subcommand per subject (outputs under experiments/benchmark/):

    .venv/bin/python scripts/benchmark.py predictor [--quick] [...]   # whole predictor per click
    .venv/bin/python scripts/benchmark.py network [--variants mit_b0] # forward passes, FLOPs
    .venv/bin/python scripts/benchmark.py evaluator [--samples 5]     # s/click split on GrabCut
    .venv/bin/python scripts/benchmark.py training [--backbones ...]  # the trainer's real step
    .venv/bin/python scripts/benchmark.py data [--workers 0 2]        # the training data pipeline

predictor: for every backbone (B0, B3) x pipeline (S1, S2) x IGA (on / off) x refiner (on / off)
the parameters, the FLOPs of one click, and the WHOLE predictor's wall time per click (target
crop, backbone, head, focus crop, ROI sampling, refiner, paste-back, and the final
device-to-host copy), split by stage, on synthetic images of each `--sizes`, with peak memory;
beside it the "full image" reference (the same model on the whole image at native resolution,
no target crop, no refiner). Writes `--json` and `--markdown` (and prints the markdown).

Conventions (also written into the JSON under "conventions"):
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one click (click 2 of the sequence, a
  target-cropped click with refinement), 2 FLOPs per multiply-accumulate, counting matrix
  products, convolutions and attention only (element-wise work and interpolation count zero;
  the ROI sampling's interpolation-matrix products count). The floor is FLOPs / peak (166 GFLOP/s fp32 on this 2-core AVX-512 CPU by
  default, `--peak-gflops`; twice that assumed for bf16/fp16).
- Clicks: a GrabCut-like synthetic object (textured background, a smooth blob); the clicker
  (evaluation rule) clicks on the errors of a scripted previous mask that converges on the object
  (the predictor is told that mask as its previous output), so target and focus crops are the
  sizes a trained model meets, whatever the weights. Weights: `--checkpoint`, else seed 0 with
  non-zero IGA coefficients. Times: every click of `--repeats` sequences of `--clicks` clicks
  after one warm-up sequence per size; median, quartiles and min-max. The timed sequences
  interleave the sizes (one sequence of each size in turn), so that the 4K-to-480p ratio is not
  at the mercy of a slow phase of a shared host.
- Evaluator overhead: the clicker's next click plus the IoU of the returned mask, per click.
- Peak memory: CPU: growth of the process's peak RSS (`resource.getrusage` ru_maxrss) from
  the built model to the end of the size's warm-up sequence (so it includes the image, the
  smaller sizes before it and all activations), in a fresh process per configuration unless
  `--no-isolate` (then a lower bound: ru_maxrss never decreases); CUDA:
  `torch.cuda.max_memory_allocated`.

"""
from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that spin while waiting make every small op crawl once the cores are shared
# (measured here: B0 forward 3.3 s instead of 72 ms at load 6 on 2 cores); set it explicitly
# (e.g. OMP_WAIT_POLICY=ACTIVE) to measure a dedicated machine. Read when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from isegm.inference.clicker import Clicker  # noqa: E402
from isegm.inference.evaluation import evaluate_dataset  # noqa: E402
from isegm.inference.onnx_backend import NETWORK_BACKENDS, STAGES as NETWORK_STAGES, \
    backend_label, build_network, network_label, parse_stages  # noqa: E402
from isegm.inference.predictors import get_predictor  # noqa: E402
from isegm.inference.utils import half_open_bbox, masks_iou  # noqa: E402
from isegm.model import IGLRModel, load_is_model  # noqa: E402
from isegm.model.roi_sampling import roi_align_box  # noqa: E402
from isegm.utils.timing import StageTimer  # noqa: E402
from isegm.utils.serialization import get_model_config  # noqa: E402

PEAK_GFLOPS_FP32 = 166.0
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGES = ("target_crop", "backbone", "head", "coarse_other", "coarse_paste", "focus_crop",
          "roi_sampling", "refiner", "paste_back")
CONVENTIONS = {
    "flops": "torch.utils.flop_counter.FlopCounterMode over one click (click 2: target crop + "
             "refinement); 2 FLOPs per multiply-accumulate; matmul, convolution and attention "
             "only (element-wise ops and interpolation count zero; the ROI sampling's small "
             "interpolation-matrix products do count)",
    "floor": "FLOPs / peak; peak = --peak-gflops (fp32) and twice that for bf16/fp16",
    "time": "whole predictor per click (get_prediction: crops, network, refiner, paste-back, "
            "final device-to-host copy); median, quartiles and min-max over all clicks of the "
            "timed sequences; CUDA stages synchronised",
    "stages": "target_crop: ROI and input resampling; backbone, head: the network modules; "
              "coarse_other: click maps, normalisation and resizing inside forward_coarse; "
              "coarse_paste: coarse probabilities into the ROI, logits; focus_crop: the focus "
              "box; roi_sampling: refiner crops; refiner: forward_refine; paste_back: refined "
              "logits into the map, sigmoid and the copy to a numpy HxW map",
    "memory_cpu": "peak RSS growth (resource.getrusage ru_maxrss) from the built model to "
                  "the end of this size's run, per fresh process unless --no-isolate",
    "memory_cuda": "torch.cuda.max_memory_allocated during the run",
    "evaluator_overhead": "Clicker.make_next_click + thresholding + IoU per click (as evaluate_sample)",
}


# ------------------------------------------------------------------------------------------
# synthetic object and scripted masks
def synthetic_object(height: int, width: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """GrabCut-like sample: HxWx3 uint8 image (smooth textured background, a blob object of a
    different colour) and its HxW int32 ground truth (1 object, 0 background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    background = np.stack([0.5 + 0.3 * np.sin(6 * xx + 3 * c) * np.cos(4 * yy + c)
                           for c in range(3)], axis=2)
    angle = np.arctan2(yy - 0.5, xx - 0.5)
    radius = 0.28 * (1 + 0.15 * np.sin(3 * angle) + 0.08 * np.cos(5 * angle))
    gt = (np.hypot((yy - 0.5) * height / max(height, width),
                   (xx - 0.5) * width / max(height, width)) < radius).astype(np.int32)
    colour = np.array([0.8, 0.25, 0.2], dtype=np.float32)
    image = np.where(gt[..., None] > 0, colour + 0.1 * np.sin(20 * xx)[..., None], background)
    image = image + rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), gt


def scripted_masks(gt: np.ndarray, clicks: int) -> List[np.ndarray]:
    """Previous masks converging on `gt`: the object shifted by a shrinking offset (the
    prediction a trained model would return after click k), float32 HxW in {0, 1}."""
    h, w = gt.shape
    out = []
    for k in range(clicks):
        dy, dx = int(0.08 * h / (k + 1)), int(-0.06 * w / (k + 1))
        mask = np.zeros_like(gt, dtype=np.float32)
        ys = slice(max(0, dy), h + min(0, dy))
        yd = slice(max(0, -dy), h + min(0, -dy))
        xs = slice(max(0, dx), w + min(0, dx))
        xd = slice(max(0, -dx), w + min(0, -dx))
        mask[ys, xs] = gt[yd, xd]
        out.append(mask)
    return out


def build_model(cfg: Dict[str, Any]) -> IGLRModel:
    """The configuration's model: from `checkpoint` or seed 0 (non-zero IGA coefficients)."""
    if cfg.get("checkpoint"):
        model = load_is_model(cfg["checkpoint"], trust=cfg.get("trust_checkpoint", False))
        return model
    torch.manual_seed(0)
    model = IGLRModel(backbone=cfg["backbone"], pipeline=cfg["pipeline"],
                      iga_stages=(0, 1, 2, 3) if cfg["iga"] else (),
                      use_refiner=cfg["refiner"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".iga_" in name:
                p.normal_(0, 0.5)
    return model.eval()


def _stage_hooks(model: torch.nn.Module, timer: StageTimer) -> List[Any]:
    """Forward hooks that charge the backbone and head modules to their own stages."""
    handles = []
    for name in ("backbone", "head"):
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(
            lambda m, a, n=name: timer.start(n)))
        handles.append(module.register_forward_hook(
            lambda m, a, o, n=name: timer.stop(n)))
    return handles


def _summary(values: Sequence[float]) -> Dict[str, float]:
    ms = sorted(1000.0 * v for v in values)
    if not ms:
        return {"median": float("nan"), "p25": float("nan"), "p75": float("nan"),
                "min": float("nan"), "max": float("nan"), "n": 0}
    q = np.percentile(ms, [25, 75])
    return {"median": statistics.median(ms), "p25": float(q[0]), "p75": float(q[1]),
            "min": ms[0], "max": ms[-1], "n": len(ms)}


def make_predictor(model: IGLRModel, cfg: Dict[str, Any], device: torch.device,
                   network: Optional[Any] = None):
    """The configuration's predictor; `network`: its network backend (default: the model)."""
    name = "iglr" if model.use_refiner else "coarse"
    return get_predictor(name, model, device, with_flip=cfg["flip"],
                         autocast_dtype=DTYPES[cfg["dtype"]], compile_model=cfg["compile"],
                         network=network)


def _onnx_stages(text: str) -> List[str]:
    try:
        return parse_stages(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def backend_variants(args: argparse.Namespace) -> List[Tuple[str, List[str]]]:
    """(backend, onnx stages) of every row: 'torch', and 'onnx' once per --onnx-stages set."""
    variants: List[Tuple[str, List[str]]] = []
    for backend in args.backends:
        for stages in (args.onnx_stages if backend == "onnx" else [list(NETWORK_STAGES)]):
            if (backend, stages) not in variants:
                variants.append((backend, stages))
    return variants


def row_label(backend: str, stages: Sequence[str], network: Any, model: Any) -> str:
    """A row's backend: 'torch', 'onnx', 'onnx-<stage>', or 'auto (<what it chose>)'."""
    if backend == "auto":
        return f"auto ({network_label(network, model)})"
    return backend_label(backend, stages)


def _check_backends(args: argparse.Namespace) -> None:
    """onnx rows need the export (--onnx-dir) of the benchmarked model (--checkpoint)."""
    if "onnx" in args.backends and not (args.onnx_dir and args.checkpoint):
        raise SystemExit("benchmark.py: error: --backends onnx needs --onnx-dir (an export "
                         "written by scripts/export_onnx.py) and --checkpoint (the model "
                         "it was exported from)")


def run_clicks(predictor, image: np.ndarray, gt: np.ndarray, clicks: int, repeats: int,
               timer: StageTimer, warmup: bool = True) -> Dict[str, List[Any]]:
    """One warm-up (unless `warmup` is False) and `repeats` timed click sequences. Returns
    per-click totals (s), stage records ({stage: s}) and the evaluator's overhead (s)."""
    masks = scripted_masks(gt, clicks)
    totals: List[float] = []
    overhead: List[float] = []
    stages: List[Dict[str, float]] = []
    for rep in range(0 if warmup else 1, repeats + 1):
        predictor.set_image(image)
        clicker = Clicker(gt_mask=gt)
        obj, valid = clicker.object_and_valid_masks()  # as evaluate_sample does, once per object
        pred_mask = np.zeros(gt.shape, dtype=bool)
        timer.clicks.clear()
        for k in range(clicks):
            t0 = time.perf_counter()
            clicker.make_next_click(pred_mask)
            t1 = time.perf_counter()
            with timer.click():
                probs = predictor.get_prediction(clicker)
            t2 = time.perf_counter()
            masks_iou(obj, valid, probs > 0.49)
            t3 = time.perf_counter()
            # the scripted mask stands for what a trained model would have returned
            _set_prev(predictor, masks[k])
            pred_mask = masks[k] > 0.5
            if rep > 0:
                totals.append(t2 - t1)
                overhead.append((t1 - t0) + (t3 - t2))
        if rep > 0:
            stages.extend(dict(c) for c in timer.clicks)
    return {"totals": totals, "overhead": overhead, "stages": stages}


def _set_prev(predictor, mask: np.ndarray) -> None:
    """Tell the predictor `mask` was its last output, with what it keeps of its own outputs:
    the support and the support's threshold (both built while an output is written)."""
    support = half_open_bbox(mask) or (0, 0, 0, 0)
    y1, y2, x1, x2 = support
    predictor.set_prev_prediction(mask, support, above=mask[y1:y2, x1:x2] > 0.49)


def count_click_flops(predictor, image: np.ndarray, gt: np.ndarray) -> float:
    """GFLOPs of click 2 of the scripted sequence (target crop + refinement)."""
    masks = scripted_masks(gt, 2)
    predictor.set_image(image)
    clicker = Clicker(gt_mask=gt)
    clicker.make_next_click(np.zeros(gt.shape, dtype=bool))
    predictor.get_prediction(clicker)
    _set_prev(predictor, masks[0])
    clicker.make_next_click(masks[0] > 0.5)
    counter = FlopCounterMode(display=False)
    with counter:
        predictor.get_prediction(clicker)
    return counter.get_total_flops() / 1e9


def full_image_flops(model: IGLRModel, height: int, width: int, flip: bool) -> float:
    """GFLOPs of `forward_coarse` on the whole image at native resolution (meta tensors: no
    compute, no memory)."""
    meta = copy.deepcopy(model).to("meta")
    b = 2 if flip else 1
    image = torch.empty(b, 3, height, width, device="meta")
    prev = torch.empty(b, 1, height, width, device="meta")
    points = torch.full((b, 2, 3), -1.0, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        meta.forward_coarse(image, points, prev)
    return counter.get_total_flops() / 1e9


def full_image_time(model: IGLRModel, image: np.ndarray, device: torch.device, runs: int,
                    flip: bool, autocast_dtype) -> Dict[str, float]:
    """Seconds of `forward_coarse` on the whole image (no target crop, no refiner)."""
    x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div(255)
    if flip:
        x = torch.cat((x, x.flip(3)))
    h, w = x.shape[-2:]
    points = torch.tensor([[[h / 2, w / 2, 0], [-1, -1, -1]]], device=device).repeat(
        x.shape[0], 1, 1)
    prev = torch.zeros(x.shape[0], 1, h, w, device=device)
    times = []
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    with torch.inference_mode(), ctx:
        for i in range(runs + 1):
            _sync(device)
            t = time.perf_counter()
            model.forward_coarse(x, points, prev)["instances"].float().sigmoid().cpu()
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - t)
    return _summary(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _maxrss_mb() -> float:
    scale = 1024.0 * 1024.0 if platform.system() == "Darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_config(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Benchmark one model configuration on one device over all sizes, one row per network
    backend of `cfg['variants']` ((backend, onnx stages) pairs, from `backend_variants`;
    picklable entry). The backends share the model and take
    turns: every timed round runs one sequence of each size with each backend."""
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    model = build_model(cfg).to(device)
    if not cfg["channels_last"]:
        model = model.to(memory_format=torch.contiguous_format)
    timer = StageTimer(device)  # one timer: the predictors run one at a time
    variants = []
    for backend, stages in cfg["variants"]:
        # the auto row: the scripts' default without an export folder
        network = build_network(model, backend,
                                cfg.get("onnx_dir") if backend == "onnx" else None, stages)
        predictor = make_predictor(model, cfg, device, network)
        predictor.timer = timer
        # the predictor's network: 'auto' gives PyTorch a stage the settings rule out
        variants.append((row_label(backend, stages, predictor.network, predictor.model), network,
                         predictor))
    # backbone / head split through module hooks (not inside a compiled graph)
    hooks = [] if cfg["compile"] else _stage_hooks(model, timer)
    base = {
        "model": f"{cfg['backbone'].replace('mit_', '').upper()}-{cfg['pipeline'].upper()}",
        "backbone": cfg["backbone"], "pipeline": cfg["pipeline"],
        "iga": cfg["iga"], "refiner": cfg["refiner"], "device": str(device),
        "dtype": cfg["dtype"], "flip": cfg["flip"], "compile": cfg["compile"],
        "channels_last": cfg["channels_last"], "threads": torch.get_num_threads(),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "interleaved": len(variants) > 1}
    peak = cfg["peak_gflops"] * (1 if cfg["dtype"] == "fp32" else 2)
    rss_start = _maxrss_mb()  # model built; images, clicks and activations come on top
    samples = {size: synthetic_object(*size) for size in cfg["sizes"]}
    # size-independent (crops are resized to 256); counted by PyTorch (onnxruntime's graphs
    # run outside its FLOP counter)
    image, gt = samples[cfg["sizes"][0]]
    base["gflop_per_click"] = count_click_flops(make_predictor(model, cfg, device), image, gt)
    # warm-up: one sequence per size, in order, for each backend in turn; peak memory is the
    # first backend's (ru_maxrss never decreases, so the others' would be a lower bound)
    memory: Dict[Tuple[int, int], Optional[float]] = {}
    for index, (_, _, predictor) in enumerate(variants):
        for size, (image, gt) in samples.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            run_clicks(predictor, image, gt, cfg["clicks"], 0, timer)
            if index == 0:
                memory[size] = (torch.cuda.max_memory_allocated(device) / 2 ** 20
                                if device.type == "cuda" else _maxrss_mb() - rss_start)
    # the timed sequences interleave the sizes and the backends (one of each in turn,
    # `repeats` rounds): a slow phase of a shared host then weighs on every row alike
    results = [{size: {"totals": [], "overhead": [], "stages": []} for size in samples}
               for _ in variants]
    for _ in range(cfg["repeats"]):
        for size, (image, gt) in samples.items():
            for index, (_, _, predictor) in enumerate(variants):
                res = run_clicks(predictor, image, gt, cfg["clicks"], 1, timer, warmup=False)
                for key, values in res.items():
                    results[index][size][key].extend(values)
    full_image: Dict[Tuple[int, int], Dict[str, Any]] = {}
    if cfg["full_image"]:  # the same model on the whole image, PyTorch: once per model
        for size, (image, _) in samples.items():
            gflop = full_image_flops(model, *size, cfg["flip"])
            full_image[size] = {"gflop": gflop, "floor_ms": gflop / peak * 1000.0}
    rows = []
    for index, (label, _, _) in enumerate(variants):
        row = dict(base, backend=label, sizes={})
        for size, res in results[index].items():
            h, w = size
            records = res["stages"]
            stages = {s: _summary([r.get(s, 0.0) for r in records]) for s in STAGES}
            if records:
                net = [r.get("coarse_net", 0.0) - r.get("backbone", 0.0) - r.get("head", 0.0)
                       for r in records]
                stages["coarse_other"] = _summary(net)
            per_click = _summary(res["totals"])
            overhead = _summary(res["overhead"])
            entry = {"per_click_ms": per_click, "stages_ms": stages,
                     "evaluator_overhead_ms": overhead,
                     "evaluator_overhead_fraction": overhead["median"] / per_click["median"],
                     "peak_memory_mb": memory[size] if index == 0 else None,
                     "floor_ms": row["gflop_per_click"] / peak * 1000.0,
                     "achieved_gflops": row["gflop_per_click"] / per_click["median"] * 1000.0}
            entry["x_floor"] = per_click["median"] / entry["floor_ms"]
            if index == 0 and size in full_image:
                full = dict(full_image[size])
                if full["gflop"] <= cfg["full_image_max_gflop"]:
                    full["ms"] = full_image_time(model, samples[size][0], device,
                                                 cfg["full_image_runs"], cfg["flip"],
                                                 DTYPES[cfg["dtype"]])
                    full["measured"] = True
                else:  # too slow to run here: estimated at the click's achieved GFLOP/s
                    full["ms"] = {"median": full["gflop"] / entry["achieved_gflops"] * 1000.0}
                    full["measured"] = False
                entry["full_image"] = full
            row["sizes"][f"{h}x{w}"] = entry
        rows.append(row)
    for hnd in hooks:
        hnd.remove()
    return rows


def run_isolated(cfg: Dict[str, Any], isolate: bool) -> List[Dict[str, Any]]:
    if not isolate:
        return run_config(cfg)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_config, cfg).result()


# ------------------------------------------------------------------------------------------
def precision_agreement(cfg: Dict[str, Any], samples: int, clicks: int) -> Dict[str, Any]:
    """Mask IoU between the fp32 predictor and the `cfg['dtype']` one on GrabCut: the fp32
    predictor drives the evaluator's clicks; at every click the low-precision predictor gets
    the same clicks and the same previous mask (one step compared at a time)."""
    from isegm.data.datasets import get_dataset
    from isegm.utils.config import load_config
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    cfg_paths = load_config()
    shared = ROOT.parent / "shared" / "datasets" / "GrabCut"
    if not cfg_paths.resolve("GRABCUT_PATH").is_dir() and shared.is_dir():
        os.environ.setdefault("GRABCUT_PATH", str(shared))  # the shared copy beside the repo
        cfg_paths = load_config()
    dataset = get_dataset("GrabCut", cfg_paths)
    model = build_model(cfg).to(device)
    ref = make_predictor(model, dict(cfg, dtype="fp32", compile=False), device)
    low = make_predictor(model, cfg, device)
    ious: List[float] = []
    for index in range(min(samples, len(dataset))):
        sample = dataset.get_sample(index)
        ref.set_image(sample.image)
        low.set_image(sample.image)
        clicker = Clicker(gt_mask=sample.gt_mask)
        mask = np.zeros(sample.gt_mask.shape, dtype=bool)
        for _ in range(clicks):
            clicker.make_next_click(mask)
            low.set_prev_prediction(ref.prev_prediction)
            a = ref.get_prediction(clicker) > 0.49
            b = low.get_prediction(clicker) > 0.49
            union = np.logical_or(a, b).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
            mask = a
    arr = np.array(ious)
    return {"dtype": cfg["dtype"], "model": cfg["backbone"], "pipeline": cfg["pipeline"],
            "weights": cfg.get("checkpoint") or "seed 0 (untrained)", "samples": samples,
            "clicks": len(ious), "mean_iou": float(arr.mean()), "min_iou": float(arr.min()),
            "fraction_ge_0.99": float((arr >= 0.99).mean())}


# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# network: forward passes alone

def _time_ms(fn, runs: int) -> Dict[str, float]:
    """Median, min and max ms of `runs` calls of `fn` after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _gflop(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def network_model(backbone: str, pipeline: str, iga: bool, size: int) -> IGLRModel:
    """Random weights (seed 0, non-zero IGA coefficients as after training), eval mode."""
    torch.manual_seed(0)
    model = IGLRModel(backbone=backbone, pipeline=pipeline, infer_size=size, refine_size=size,
                      iga_stages=(0, 1, 2, 3) if iga else ()).eval()
    if iga:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".iga_" in name:
                    p.normal_(0, 0.5)
    return model


def network_row(model: IGLRModel, runs: int, network: Optional[Any] = None,
                backend: str = "torch") -> Dict[str, Any]:
    """Batch 1, inference mode: `forward_coarse` on an S x S input (the model's infer size)
    with 3 clicks and a previous mask, `forward_refine` on refine-size crops, both run by
    `network` (default: the model), and the three RoIAlign calls of the refiner's inputs (one
    host box, `roi_align_box`, as the predictor samples them) from a 480x854 image. FLOPs are
    the model's (PyTorch)."""
    network = model if network is None else network
    size, s = model.infer_size, model.refine_size
    image = torch.rand(1, 3, size, size)
    points = torch.tensor([[[0.4 * size, 0.47 * size, 0], [0.55 * size, 0.35 * size, 1],
                            [-1, -1, -1], [0.12 * size, 0.78 * size, 2], [-1, -1, -1],
                            [-1, -1, -1]]])
    prev = (torch.rand(1, 1, size, size) > 0.5).float()
    crop, coarse_crop = torch.rand(1, 3, s, s), torch.randn(1, 1, s, s)
    feature_crop = torch.randn(1, model.feature_channels, s // 4, s // 4)
    full, full_logits = torch.rand(1, 3, 480, 854), torch.randn(1, 1, 480, 854)
    feature = torch.randn(1, model.feature_channels, 64, 64)
    box = (300.0, 120.0, 520.0, 330.0)

    def coarse(net=network):
        return net.forward_coarse(image, points, prev)

    def refine(net=network):
        return net.forward_refine(crop, points, coarse_crop, feature_crop)

    def roi():
        roi_align_box(full, box, s)
        roi_align_box(full_logits, box, s)
        roi_align_box(feature, box, s // 4, spatial_scale=64 / 854)

    params = get_model_config(model)["params"]
    with torch.inference_mode():
        coarse(model)  # the head's folded weights are composed once, then cached: not a click's
        return {"model": f"{model.backbone_name.replace('mit_', '').upper()}-"
                         f"{model.pipeline.upper()}",
                "iga": bool(params.get("iga_stages")), "backend": backend, "size": size,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "coarse_gflop": _gflop(lambda: coarse(model)),
                "refine_gflop": _gflop(lambda: refine(model)),
                "coarse_ms": _time_ms(coarse, runs), "refine_ms": _time_ms(refine, runs),
                "roi_ms": _time_ms(roi, runs)}


def network(args: argparse.Namespace) -> Dict[str, Any]:
    _check_backends(args)
    rows = []
    if args.checkpoint:  # a trained model (and its export): one row per backend
        model = load_is_model(args.checkpoint)
        for backend, stages in backend_variants(args):
            net = build_network(model, backend, args.onnx_dir if backend == "onnx" else None,
                                stages)
            rows.append(network_row(model, args.runs, net,
                                    row_label(backend, stages, net, model)))
    else:
        rows = [network_row(network_model(v, p, iga, args.size), args.runs)
                for v in args.variants for p in args.pipelines for iga in (True, False)]
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, "
             f"median of {args.runs} runs [min-max]; FLOPs: {CONVENTIONS['flops']}", "",
             "| model | IGA | backend | input | params (M) | coarse GFLOP | refine GFLOP | "
             "coarse ms | refine ms | RoIAlign ms | total ms | GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        total = r["coarse_ms"]["median"] + r["refine_ms"]["median"] + r["roi_ms"]["median"]
        gflop = r["coarse_gflop"] + r["refine_gflop"]
        spans = [f"{t['median']:.1f} [{t['min']:.0f}-{t['max']:.0f}]"
                 for t in (r["coarse_ms"], r["refine_ms"], r["roi_ms"])]
        lines.append(f"| {r['model']} | {'on' if r['iga'] else 'off'} | {r['backend']} | "
                     f"{r['size']}x{r['size']} | {r['params_m']:.2f} | "
                     f"{r['coarse_gflop']:.2f} | {r['refine_gflop']:.2f} | "
                     f"{' | '.join(spans)} | {total:.1f} | {gflop / total * 1000:.0f} |")
    return {"rows": rows, "text": "\n".join(lines)}


# ------------------------------------------------------------------------------------------
# evaluator: seconds per click of the NoC loop, split

def evaluator_row(backbone: str, dataset, samples: int, clicks: int, size: int,
                  device: torch.device) -> Dict[str, Any]:
    """The IGLR predictor (flip on, as in evaluation) with a fresh model on the first `samples`
    images, `clicks` clicks each (no early stop), after one warm-up sample: seconds per click
    in the network, the refiner's RoIAlign, other predictor work, the simulator + IoU, and the
    rest (image loading, set_image)."""
    torch.manual_seed(0)
    model = IGLRModel(backbone, pipeline="s2", infer_size=size, refine_size=size)
    predictor = get_predictor("iglr", model, device, with_flip=True)
    evaluate_dataset(dataset, predictor, indices=[0], show_progress=False, max_iou_thr=1.01,
                     max_clicks=2)
    predictor.model_time = predictor.sampling_time = 0.0
    stats: Dict[str, Any] = {}
    evaluate_dataset(dataset, predictor, indices=range(min(samples, len(dataset))),
                     show_progress=False, stats=stats, max_iou_thr=1.01, max_clicks=clicks)
    n = stats["clicks"]
    model_s, sampling = stats["model_s"] / n, predictor.sampling_time / n
    predictor_other = (stats["predictor_s"] - stats["model_s"]) / n - sampling
    simulator, total = stats["overhead_s"] / n, stats["elapsed_s"] / n
    return {"backbone": backbone, "clicks": n, "total_s_per_click": total,
            "model_s_per_click": model_s, "roi_sampling_s_per_click": sampling,
            "predictor_overhead_s_per_click": predictor_other,
            "simulator_iou_s_per_click": simulator,
            "other_s_per_click": total - model_s - sampling - predictor_other - simulator,
            "overhead_fraction": (total - model_s) / total}


def evaluator(args: argparse.Namespace) -> Dict[str, Any]:
    from isegm.data.datasets import get_dataset
    from isegm.inference.utils import compute_noc_metric, compute_strict_nof, get_iou_thresholds
    from isegm.utils.config import load_config
    dataset = get_dataset(args.dataset, load_config())
    device = torch.device(args.device)
    result: Dict[str, Any] = {"device": str(device), "dataset": args.dataset, "timing": []}
    lines = []
    for backbone in args.backbones:
        row = evaluator_row(backbone, dataset, args.samples, args.clicks, args.size, device)
        result["timing"].append(row)
        lines.append(f"{backbone}-S2: {row['total_s_per_click']:.3f} s/click = model "
                     f"{row['model_s_per_click']:.3f} + RoIAlign "
                     f"{row['roi_sampling_s_per_click']:.4f} + other predictor work "
                     f"{row['predictor_overhead_s_per_click']:.4f} + simulator/IoU "
                     f"{row['simulator_iou_s_per_click']:.4f} + other "
                     f"{row['other_s_per_click']:.4f} (overhead "
                     f"{100 * row['overhead_fraction']:.1f}%)")
    if args.classical:
        start, stats = time.perf_counter(), {}
        all_ious, _ = evaluate_dataset(
            dataset, get_predictor("cv_grabcut"), show_progress=False, stats=stats,
            max_iou_thr=0.9, max_clicks=20, indices=range(min(args.classical_samples, len(dataset))))
        noc, nof = compute_noc_metric(all_ious, get_iou_thresholds(0.9), 20)
        result["classical"] = {
            "predictor": "cv_grabcut", "num_samples": len(all_ious), "NoC@80": noc[0],
            "NoC@85": noc[1], "NoC@90": noc[2], "NoF@85": nof[1], "NoF@90": nof[2],
            "strict_NoF@90": compute_strict_nof(all_ious, 0.9),
            "spc_s": (time.perf_counter() - start) / stats["clicks"]}
        lines.append(f"cv_grabcut on {args.dataset} ({len(all_ious)} samples): NoC@80 "
                     f"{noc[0]:.2f}, NoC@85 {noc[1]:.2f}, NoC@90 {noc[2]:.2f}, NoF@85 {nof[1]}, "
                     f"NoF@90 {nof[2]}")
    result["text"] = "\n".join(lines)
    return result


# ------------------------------------------------------------------------------------------
# training: the trainer's own step, timed by the trainer

def training_row(backbone: str, batch: int, crop: int, steps: int, warmup_epochs: int,
                 device: torch.device, workdir: Path) -> Dict[str, Any]:
    """The CPU study's recipe (COCO_MVAL_CPU: gradient clipping, the non-finite check, its
    click rounds) on synthetic images, B0/B3-S2: `ISTrainer.training` runs `warmup_epochs`
    epochs, then one timed epoch of `steps` steps, each its real `train_step`; the times are
    the trainer's own (its epoch summary's seconds per step, and per batch of data)."""
    from isegm.engine import recipe
    from isegm.engine.distributed import DistInfo
    from isegm.engine.experiment import ExperimentPaths
    from isegm.engine.runconfig import RunConfig
    from isegm.utils.config import load_config
    rec = recipe.COCO_MVAL_CPU.replace(
        train_dataset="Synthetic", pretrained=False, backbone=backbone,
        train_dataset_kwargs={"num_samples": 4 * batch, "image_size": (crop + crop // 4,) * 2,
                              "split": "train"},
        val_dataset=None, crop_size=(crop, crop), batch_size=batch, epoch_len=batch * steps,
        image_dump_interval=0)
    paths = ExperimentPaths.at(workdir / backbone)
    paths.make_dirs()
    cfg = RunConfig(config_path=Path(__file__), paths=load_config(), batch_size=batch, workers=0,
                    cpu=device.type == "cpu", dist=DistInfo(device=device), exp=paths)
    trainset, _ = recipe.build_datasets(cfg, rec)
    model, model_cfg = recipe.init_model(cfg, rec)
    trainer = recipe.make_trainer(model, cfg, model_cfg, rec, trainset, None)
    if len(trainer.train_loader) != steps:
        raise RuntimeError(f"training benchmark: an epoch has {len(trainer.train_loader)} "
                           f"steps, expected {steps}")
    try:
        for epoch in range(warmup_epochs):
            trainer.training(epoch)
        summary = trainer.training(warmup_epochs)
    finally:  # the event writer's thread must be done before its folder is removed
        if trainer.writer is not None:
            trainer.writer.close()
    step_s, data_s = summary["train/s_per_step"], summary["train/data_s_per_step"]
    return {"model": backbone.replace("mit_", "").upper() + "-S2", "step_s": step_s,
            "data_s": data_s, "samples_per_s": batch / (step_s + data_s),
            "clip_grad_norm": trainer.clip_grad_norm,
            "max_click_rounds": trainer.max_num_next_clicks, "loss": summary["train/loss"]}


def training(args: argparse.Namespace) -> Dict[str, Any]:
    from isegm.utils.log import setup_logging
    setup_logging(None, enabled=False)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [training_row(b, args.batch_size, args.crop, args.steps, args.warmup_epochs,
                             device, Path(tmp)) for b in args.backbones]
    lines = [f"Training ({device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
             f"{args.crop}x{args.crop} crops; ISTrainer.train_step as the trainer times it, "
             f"{args.steps} steps after {args.warmup_epochs} warm-up epoch(s)):", "",
             "| model | samples/s | step s | data s | clip | click rounds U{0..n} |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['samples_per_s']:.2f} | {r['step_s']:.3f} | "
                     f"{r['data_s']:.3f} | {r['clip_grad_norm']} | {r['max_click_rounds']} |")
    return {"device": str(device), "batch_size": args.batch_size, "crop": args.crop,
            "steps": args.steps, "rows": rows, "text": "\n".join(lines)}


# ------------------------------------------------------------------------------------------
# data: the training data pipeline

def data_samples_per_s(dataset, workers: int, items: int, batch_size: int) -> float:
    """Samples per second over `items` items (after one untimed batch: worker start-up)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         shuffle=True, drop_last=True)
    it = iter(loader)
    next(it)
    count, start = 0, time.perf_counter()
    for batch in it:
        count += batch["images"].shape[0]
        if count >= items:
            break
    return count / (time.perf_counter() - start)


def data(args: argparse.Namespace) -> Dict[str, Any]:
    """Each item read or generated, augmented (object-centred crop, flip, colour jitter) and
    given its clicks by MultiPointSampler (24 points, IGLR settings), then collated."""
    from isegm.data.datasets import CocoMValDataset, SyntheticDataset
    from isegm.data.points_sampler import MultiPointSampler
    from isegm.data.transforms import build_train_augmentator
    from isegm.utils.config import load_config
    torch.manual_seed(0)

    def sampler() -> MultiPointSampler:
        return MultiPointSampler(max_num_points=24, prob_gamma=0.8, merge_objects_prob=0.15,
                                 max_num_merged_objects=2, first_click_center=True)

    crop = (args.crop, args.crop)
    epoch_len = args.items + 4 * args.batch_size
    datasets = {f"Synthetic ({args.crop}x{args.crop} crops)": SyntheticDataset(
        num_samples=200, augmentator=build_train_augmentator(crop), points_sampler=sampler(),
        epoch_len=epoch_len)}
    if args.coco_mval is not None:
        root = Path(args.coco_mval) if args.coco_mval else load_config().resolve("COCO_MVAL_PATH")
        if not root.is_dir():
            raise SystemExit(f"benchmark.py data: --coco-mval: {root} is not a folder (give "
                             f"the COCO_MVal root, or set COCO_MVAL_PATH in configs.yml)")
        datasets["COCO-MVal (jpg+png)"] = CocoMValDataset(
            root, augmentator=build_train_augmentator(crop), points_sampler=sampler(),
            epoch_len=epoch_len)
    rows = [{"dataset": name, "workers": w,
             "samples_per_s": data_samples_per_s(ds, w, args.items, args.batch_size)}
            for name, ds in datasets.items() for w in args.workers]
    lines = [f"Training data pipeline, batch {args.batch_size}, {args.items} items per row, "
             f"{os.cpu_count()} CPU cores", "", "| dataset | workers | samples/s |",
             "|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['workers']} | {r['samples_per_s']:.1f} |" for r in rows]
    return {"rows": rows, "text": "\n".join(lines)}

# ------------------------------------------------------------------------------------------
def _fmt(t: Dict[str, float]) -> str:
    return f"{t['median']:.1f} [{t['p25']:.0f}-{t['p75']:.0f}]"


def _memory(mb: Optional[float]) -> str:
    return "-" if mb is None else f"{mb:.0f}"


def markdown(result: Dict[str, Any]) -> str:
    env = result["environment"]
    lines = ["# IGLR predictor benchmark\n",
             f"torch {env['torch']}, {env['cpu']}, load average {env['load_before']} "
             f"(before) / {env['load_after']} (after), {result['settings']['threads']} threads, "
             f"flip {'on' if result['settings']['flip'] else 'off'}, batch "
             f"{2 if result['settings']['flip'] else 1}. Times: median [p25-p75] ms per click "
             f"of the whole predictor. FLOPs: {CONVENTIONS['flops']}. Floor: FLOPs / "
             f"{result['settings']['peak_gflops']:.0f} GFLOP/s (x2 for bf16/fp16)."
             + (" Backends of one model took turns in one process (one sequence each in "
                "turn); peak memory is the first backend's only."
                if any(r.get("interleaved") for r in result["rows"]) else "") + "\n",
             "| model | IGA | refiner | device | backend | dtype | params M | GFLOP/click | "
             "image | ms/click | floor ms | x floor | eval overhead % | peak MB | full image ms "
             "(GFLOP) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for size, e in row["sizes"].items():
            full = e.get("full_image")
            full_s = "-"
            if full:
                star = "" if full["measured"] else " (est.)"
                full_s = f"{full['ms']['median']:.0f}{star} ({full['gflop']:.1f})"
            lines.append(
                f"| {row['model']} | {'on' if row['iga'] else 'off'} | "
                f"{'on' if row['refiner'] else 'off'} | {row['device']} | "
                f"{row.get('backend', 'torch')} | {row['dtype']} | "
                f"{row['params_m']:.2f} | {row['gflop_per_click']:.2f} | {size} | "
                f"{_fmt(e['per_click_ms'])} | {e['floor_ms']:.0f} | {e['x_floor']:.2f} | "
                f"{100 * e['evaluator_overhead_fraction']:.1f} | "
                f"{_memory(e['peak_memory_mb'])} | {full_s} |")
    lines += ["", "Per-stage medians (ms; onnxruntime's coarse graph is not split: backbone and "
              "head count under coarse_other in onnx rows):", "",
              "| model | IGA | refiner | device | backend | dtype | image | "
              + " | ".join(STAGES) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(STAGES)]
    for row in result["rows"]:
        for size, e in row["sizes"].items():
            lines.append(f"| {row['model']} | {'on' if row['iga'] else 'off'} | "
                         f"{'on' if row['refiner'] else 'off'} | {row['device']} | "
                         f"{row.get('backend', 'torch')} | {row['dtype']} | {size} | " +
                         " | ".join(f"{e['stages_ms'][s]['median']:.1f}" for s in STAGES) + " |")
    agreement = result.get("agreement")
    if agreement:
        lines += ["", f"{agreement['dtype']} vs fp32 on GrabCut ({agreement['model']}, "
                  f"{agreement['weights']}, {agreement['samples']} images, "
                  f"{agreement['clicks']} clicks): mask IoU mean {agreement['mean_iou']:.4f}, "
                  f"min {agreement['min_iou']:.4f}, "
                  f"{100 * agreement['fraction_ge_0.99']:.0f}% of clicks >= 0.99"]
    return "\n".join(lines) + "\n"


def _parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--sizes expects HxW like 480x854, got '{text}'") from e
    return h, w


def _onoff(values: Sequence[str]) -> List[bool]:
    return [v == "on" for v in values]


OUTPUT_DIR = ROOT / "experiments" / "benchmark"  # default outputs (git-ignored)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backends", nargs="+", default=["torch"], choices=NETWORK_BACKENDS,
                   help="network backends, one row each: PyTorch, onnxruntime on --onnx-dir, "
                        "and 'auto' (the scripts' default without an export folder: on the "
                        "CPU, onnxruntime's refiner exported in the process; the row names "
                        "its choice)")
    p.add_argument("--onnx-dir", default=None,
                   help="ONNX export of --checkpoint (scripts/export_onnx.py), for the onnx rows")
    p.add_argument("--onnx-stages", type=_onnx_stages, nargs="+",
                   default=[list(NETWORK_STAGES)],
                   help="stages onnxruntime runs in the onnx rows (comma-separated: "
                        "coarse,refiner); PyTorch runs the others. Several sets: one onnx row "
                        "each (e.g. --onnx-stages refiner coarse,refiner)")


def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="smoke run: B0-S2 only, IGA on, refiner on and off, one small image, "
                        "3 clicks")
    p.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b3"])
    p.add_argument("--pipelines", nargs="+", default=["s1", "s2"], choices=["s1", "s2"])
    p.add_argument("--iga", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--refiner", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--sizes", nargs="+", type=_parse_size,
                   default=[(480, 640), (480, 854), (2160, 3840)])
    p.add_argument("--devices", nargs="+", default=None,
                   help="default: cpu, and cuda when available")
    p.add_argument("--clicks", type=int, default=6, help="clicks per sequence")
    p.add_argument("--repeats", type=int, default=3, help="timed sequences (after 1 warm-up)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="autocast dtype of the network (bf16 on CPU; fp16/bf16 on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="run the convolutions in contiguous (NCHW) memory format")
    p.add_argument("--flip", action="store_true",
                   help="horizontal-flip averaging (IGLR's evaluation default; batch 2)")
    p.add_argument("--checkpoint", default=None, help="trained model (default: seed-0 weights)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="accept a checkpoint that needs full unpickling, which can run code "
                        "stored in the file: only for files from a trusted source")
    add_backend_arguments(p)
    p.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS_FP32)
    p.add_argument("--no-full-image", dest="full_image", action="store_false")
    p.add_argument("--full-image-max-gflop", type=float, default=150.0,
                   help="time the full-image reference only below this cost (else estimate)")
    p.add_argument("--full-image-runs", type=int, default=2)
    p.add_argument("--agreement", action="store_true",
                   help="also measure the mask IoU of --dtype against fp32 on GrabCut")
    p.add_argument("--agreement-samples", type=int, default=10)
    p.add_argument("--agreement-clicks", type=int, default=5)
    p.add_argument("--no-interleave", dest="interleave", action="store_false",
                   help="time each backend in its own run (and process) instead of taking "
                        "turns with the others in one; gives every backend row its own peak "
                        "memory, but a shared host's slow phases then fall on some rows only")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run every configuration in this process (memory becomes a lower bound)")
    p.add_argument("--markdown", default=str(OUTPUT_DIR / "predictor.md"))


def predictor(args: argparse.Namespace) -> Dict[str, Any]:
    if args.quick:
        args.backbones, args.pipelines, args.iga = ["mit_b0"], ["s2"], ["on"]
        args.sizes, args.clicks, args.repeats = [(120, 160)], 3, 1
        args.full_image_runs, args.isolate = 1, False
    _check_backends(args)
    if args.checkpoint:
        # a trained model has one architecture: the rows (and the agreement) are that model's
        params = get_model_config(load_is_model(args.checkpoint,
                                                trust=args.trust_checkpoint))["params"]
        args.backbones, args.pipelines = [params["backbone"]], [params["pipeline"]]
        args.iga = ["on" if params.get("iga_stages") else "off"]
        args.refiner = ["on" if params.get("use_refiner", True) else "off"]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "markdown", "run")}
    settings["sizes"] = [f"{h}x{w}" for h, w in args.sizes]
    rows = []
    for device in devices:
        for backbone in args.backbones:
            for pipeline in args.pipelines:
                for iga in _onoff(args.iga):
                    for refiner in _onoff(args.refiner):
                        variants = backend_variants(args)
                        groups = [variants] if args.interleave else [[v] for v in variants]
                        for group in groups:
                            cfg = {"backbone": backbone, "pipeline": pipeline, "iga": iga,
                                   "refiner": refiner, "device": device,
                                   "threads": args.threads, "dtype": args.dtype,
                                   "compile": args.compile,
                                   "channels_last": args.channels_last, "flip": args.flip,
                                   "checkpoint": args.checkpoint,
                                   "trust_checkpoint": args.trust_checkpoint,
                                   "clicks": args.clicks, "repeats": args.repeats,
                                   "sizes": args.sizes, "peak_gflops": args.peak_gflops,
                                   "variants": group, "onnx_dir": args.onnx_dir,
                                   # the full-image reference (PyTorch, no refiner): once
                                   # per model
                                   "full_image": args.full_image and refiner == _onoff(
                                       args.refiner)[0] and group[0] == variants[0],
                                   "full_image_max_gflop": args.full_image_max_gflop,
                                   "full_image_runs": args.full_image_runs}
                            for row in run_isolated(cfg, args.isolate):
                                rows.append(row)
                                print(f"{row['model']} IGA {'on' if iga else 'off'} refiner "
                                      f"{'on' if refiner else 'off'} {device} "
                                      f"{row['backend']}: " + ", ".join(
                                          f"{s} {e['per_click_ms']['median']:.1f} ms"
                                          for s, e in row["sizes"].items()), flush=True)
    result: Dict[str, Any] = {"conventions": CONVENTIONS, "settings": settings, "rows": rows}
    if args.agreement and args.dtype != "fp32":
        cfg = {"backbone": args.backbones[-1], "pipeline": args.pipelines[-1],
               "iga": _onoff(args.iga)[0], "refiner": _onoff(args.refiner)[0],
               "device": devices[0], "threads": args.threads,
               "dtype": args.dtype, "compile": False, "channels_last": True,
               "flip": args.flip, "checkpoint": args.checkpoint,
               "trust_checkpoint": args.trust_checkpoint}
        result["agreement"] = precision_agreement(cfg, args.agreement_samples,
                                                  args.agreement_clicks)
    result["environment"] = {
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_before": load_before,
        "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    result["text"] = markdown(result)
    _write(Path(args.markdown), result["text"])
    return result



def _write(path: Path, text: str) -> None:
    """Write `text` to `path` (parents created) through a temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    sub = {name: commands.add_parser(name, help=text) for name, text in (
        ("predictor", "the whole predictor per click, by stage, FLOPs, memory"),
        ("network", "forward passes and the refiner's RoIAlign alone, FLOPs"),
        ("evaluator", "seconds per click of the NoC loop on a dataset, split"),
        ("training", "the trainer's real step (ISTrainer.train_step), as the trainer times it"),
        ("data", "the training data pipeline, samples/s"))}
    add_predictor_arguments(sub["predictor"])
    sub["predictor"].set_defaults(run=predictor)
    p = sub["network"]
    p.add_argument("--variants", nargs="+", default=["mit_b0", "mit_b3"])
    p.add_argument("--pipelines", nargs="+", default=["s2"], choices=["s1", "s2"])
    p.add_argument("--size", type=int, default=256, help="network input and refiner crop size")
    p.add_argument("--runs", type=int, default=15, help="timed runs (after 3 warm-up runs)")
    p.add_argument("--checkpoint", default=None,
                   help="a trained model instead of the random --variants (its own sizes)")
    add_backend_arguments(p)
    p.set_defaults(run=network)
    p = sub["evaluator"]
    p.add_argument("--dataset", default="GrabCut")
    p.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b3"])
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--size", type=int, default=256, help="infer and refine size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-classical", dest="classical", action="store_false",
                   help="skip OpenCV GrabCut's NoC on the dataset")
    p.add_argument("--classical-samples", type=int, default=50)
    p.set_defaults(run=evaluator)
    p = sub["training"]
    p.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b3"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps (one epoch)")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=training)
    p = sub["data"]
    p.add_argument("--items", type=int, default=160, help="timed samples per setting")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--coco-mval", nargs="?", const="", default=None, metavar="ROOT",
                   help="also COCO-MVal, from ROOT (default: COCO_MVAL_PATH of configs.yml)")
    p.set_defaults(run=data)
    for name, p in sub.items():
        p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        p.add_argument("--json", default=str(OUTPUT_DIR / f"{name}.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = args.run(args)
    print(result["text"])
    _write(Path(args.json), json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
