"""ONNX export of the IGLR model's two network calls (scripts/export_onnx.py; docs/onnx.md).

    meta = export_onnx(model, "exports/b0_s2")   # coarse.onnx, refiner.onnx, export.json

- `coarse.onnx` is `IGLRModel.forward_coarse` on the target crop: image (B, 3, S, S) in [0, 1],
  points (B, 2M, 3) rows (y, x, order) with padding (-1, -1, -1), prev_mask (B, 1, S, S)
  probabilities (absent for models without the previous-mask input) -> instances (B, 1, S, S)
  logits, instances_lowres (B, 1, S/4, S/4) logits and feature (B, S/4, S/4, D). The batch (1, or
  2 with flip averaging) and the click axis 2M are dynamic; S is the model's `infer_size`.
- `refiner.onnx` is `IGLRModel.forward_refine` on crops already ROI-sampled on the host:
  image_crop (B, 3, R, R) in [0, 1], points_crop (B, 2M, 3) in crop pixels, coarse_crop
  (B, 1, R, R) logits, feature_crop (B, R/4, R/4, D) -> refined, boundary (B, 1, R, R) logits;
  R is `refine_size`. ROI sampling (`roi_align` with data-dependent sizes) stays on the host.
- The decoder feature crosses the graph boundary channels-last (NHWC), the layout in which the
  model computes it and the host samples it: in NCHW, the host would make a transposing copy of
  it twice a click (8 MB each for B3's 512 channels; `FEATURE_LAYOUT`).
- `export.json` holds what a runtime needs: input sizes, normalisation (applied inside the
  graphs), thresholds, the checkpoint's model arguments, input/output names and shapes, the
  opset and the exporting versions, and the export's own check against PyTorch.

Click maps, normalisation, the interaction-guided attention bias (a float attention mask) and the
BatchNorm folding of the head and refiner are inside the graphs, exactly as in PyTorch.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..model.is_model import IGLRModel, IMAGENET_MEAN, IMAGENET_STD
from ..utils.log import logger
from ..utils.serialization import get_model_config
from .evaluation import PRED_THRESHOLD
from .focus import FOCUS_LOGIT_THRESHOLD, PREV_MASK_THRESHOLD

FORMAT = "iglr-onnx"
FORMAT_VERSION = 2  # 2: the decoder feature in and out as NHWC
OPSET = 20
COARSE_FILE = "coarse.onnx"
REFINER_FILE = "refiner.onnx"
META_FILE = "export.json"
COARSE_OUTPUTS = ("instances", "instances_lowres", "feature")
REFINER_INPUTS = ("image_crop", "points_crop", "coarse_crop", "feature_crop")
REFINER_OUTPUTS = ("refined", "boundary")
# the decoder feature's layout at the graph boundary: coarse.onnx's output "feature" and
# refiner.onnx's input "feature_crop" are (B, h, w, D)
FEATURE_LAYOUT = "NHWC"
# the export's own check: onnxruntime against PyTorch on the example inputs (max abs difference)
CHECK_TOLERANCE = 1e-3


def default_export_dir(checkpoint: Union[str, os.PathLike]) -> Path:
    """Where scripts/export_onnx.py writes a checkpoint's export without --output, and where
    the 'auto' backend looks for it: `<folder>/<stem>_onnx` beside `<folder>/<stem>.pth`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}_onnx")


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported graph does not match PyTorch."""


def coarse_inputs(with_prev_mask: bool) -> Tuple[str, ...]:
    """Input names of coarse.onnx."""
    return ("image", "points", "prev_mask") if with_prev_mask else ("image", "points")


def to_nhwc(feature: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h, w, D): a view, contiguous when `feature` is channels-last."""
    return feature.permute(0, 2, 3, 1)


def from_nhwc(feature: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) -> (B, D, h, w): a view, channels-last when `feature` is contiguous."""
    return feature.permute(0, 3, 1, 2)


def graph_feeds(inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The model's inputs of one stage (`example_inputs`) as the graph takes them: the
    feature crop NHWC."""
    return {k: to_nhwc(v) if k == "feature_crop" else v for k, v in inputs.items()}


class CoarseGraph(nn.Module):
    """`model.forward_coarse` with tuple outputs (in `COARSE_OUTPUTS` order; the feature
    NHWC), for export."""

    def __init__(self, model: IGLRModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, points: torch.Tensor,
                prev_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
        out = self.model.forward_coarse(image, points, prev_mask)
        out["feature"] = to_nhwc(out["feature"])
        return tuple(out[name] for name in COARSE_OUTPUTS)


class RefinerGraph(nn.Module):
    """`model.forward_refine` (the feature crop taken NHWC) with tuple outputs (in
    `REFINER_OUTPUTS` order), for export."""

    def __init__(self, model: IGLRModel):
        super().__init__()
        self.model = model

    def forward(self, image_crop: torch.Tensor, points_crop: torch.Tensor,
                coarse_crop: torch.Tensor, feature_crop: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.model.forward_refine(image_crop, points_crop, coarse_crop,
                                        from_nhwc(feature_crop))
        return tuple(out[name] for name in REFINER_OUTPUTS)


def example_points(batch: int, per_sign: int, size: int, generator: torch.Generator
                   ) -> torch.Tensor:
    """(batch, 2 * per_sign, 3) clicks inside a size x size image, positives first, with the
    last negative row of each sample as padding (-1, -1, -1)."""
    coords = torch.rand(batch, 2 * per_sign, 2, generator=generator) * (size - 1)
    order = torch.arange(2 * per_sign, dtype=torch.float32).expand(batch, -1)[..., None]
    points = torch.cat((coords.round(), order), dim=2)
    points[:, -1] = -1
    return points


def example_inputs(model: IGLRModel, stage: str, batch: int = 2, per_sign: int = 2,
                   seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random inputs of one stage ('coarse' or 'refiner') keyed by the graph's input names,
    as the model takes them (`graph_feeds` gives the graph's layout)."""
    g = torch.Generator().manual_seed(seed)
    if stage == "coarse":
        s = model.infer_size
        inputs = {"image": torch.rand(batch, 3, s, s, generator=g),
                  "points": example_points(batch, per_sign, s, g)}
        if model.with_prev_mask:
            inputs["prev_mask"] = torch.rand(batch, 1, s, s, generator=g)
        return inputs
    if stage == "refiner":
        r = model.refine_size
        f = max(1, r // 4)
        return {"image_crop": torch.rand(batch, 3, r, r, generator=g),
                "points_crop": example_points(batch, per_sign, r, g),
                "coarse_crop": torch.randn(batch, 1, r, r, generator=g) * 4,
                "feature_crop": torch.rand(batch, model.feature_channels, f, f, generator=g)}
    raise ValueError(f"unknown stage '{stage}'; known: coarse, refiner")


def _dynamic_shapes(names: Sequence[str]) -> Dict[str, Dict[int, Any]]:
    """Batch dynamic on every input, the click axis (an even 2M, M >= 1) on the points."""
    from torch.export import Dim
    batch = Dim("batch", min=1)
    clicks = Dim("clicks_per_sign", min=1)
    return {name: ({0: batch, 1: 2 * clicks} if name.startswith("points") else {0: batch})
            for name in names}


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def graph_bytes(module: nn.Module, inputs: Dict[str, torch.Tensor],
                output_names: Sequence[str], opset: int = OPSET) -> bytes:
    """torch.onnx.export (dynamo) of `module` on keyword-named example inputs: the serialized
    ONNX model (one self-contained protobuf)."""
    import logging
    from torch.nn.attention import SDPBackend, sdpa_kernel
    names = list(inputs)
    # torch's registry logs a warning for every torchvision op it cannot register; this
    # project has no torchvision and its graphs use none of them
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    # The CPU flash-attention kernel reports an output layout that the reshape after it takes
    # as a view; the decomposed graph computes attention as the math kernel does, with another
    # layout, and that view fails. Exporting with the math kernel keeps both the same.
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), warnings.catch_warnings():
            # torch's own notes on every export: one Dim object shared by all batch axes, and a
            # deprecation inside torch.utils._pytree
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated",
                                    category=FutureWarning)
            program = torch.onnx.export(module, tuple(inputs[n] for n in names), dynamo=True,
                                        opset_version=opset, input_names=names,
                                        output_names=list(output_names),
                                        dynamic_shapes=_dynamic_shapes(names), verbose=False)
    finally:
        registry.setLevel(level)
    return program.model_proto.SerializeToString()


def _export_graph(module: nn.Module, inputs: Dict[str, torch.Tensor], output_names: Sequence[str],
                  path: Path, opset: int) -> None:
    """`graph_bytes` written to `path`."""
    path.write_bytes(graph_bytes(module, inputs, output_names, opset))


def _check(module: nn.Module, path: Path, inputs: Dict[str, torch.Tensor],
           output_names: Sequence[str]) -> Tuple[float, Tuple[torch.Tensor, ...]]:
    """(max abs difference between PyTorch and onnxruntime over all outputs of one graph,
    PyTorch's outputs)."""
    with torch.no_grad():
        expected = module(*inputs.values())
    import onnxruntime as ort
    from .onnx_backend import session_options
    session = ort.InferenceSession(str(path), session_options(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(list(output_names), {k: v.numpy() for k, v in inputs.items()})
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)), expected


def export_onnx(model: IGLRModel, output_dir: Union[str, os.PathLike], opset: int = OPSET,
                checkpoint: Optional[str] = None) -> Dict[str, Any]:
    """Export `model` (an `IGLRModel`, any device; exported from a float32 CPU copy in eval
    mode) into `output_dir`: coarse.onnx, refiner.onnx (models with the refiner) and
    export.json, each written atomically (export.json, which marks a complete export, last).
    Checks each graph with onnxruntime against PyTorch on random inputs (raises `ExportError`
    above `CHECK_TOLERANCE`). Returns the metadata written to export.json."""
    if not isinstance(model, IGLRModel):
        raise ExportError(f"export_onnx expects an IGLRModel, got {type(model).__name__}")
    model = cpu_eval_copy(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stages: List[Tuple[str, nn.Module, str, Tuple[str, ...]]] = [
        ("coarse", CoarseGraph(model).eval(), COARSE_FILE, COARSE_OUTPUTS)]
    if model.use_refiner and model.refiner is not None:
        stages.append(("refiner", RefinerGraph(model).eval(), REFINER_FILE, REFINER_OUTPUTS))
    graphs: Dict[str, Any] = {}
    check: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=".export.", dir=output_dir) as tmp:
        for stage, module, filename, outputs in stages:
            inputs = graph_feeds(example_inputs(model, stage))
            logger.info(f"exporting the {stage} stage to {output_dir / filename}")
            _export_graph(module, inputs, outputs, Path(tmp) / filename, opset)
            diff, results = _check(module, Path(tmp) / filename, inputs, outputs)
            if not diff <= CHECK_TOLERANCE:
                raise ExportError(f"{filename}: onnxruntime differs from PyTorch by {diff:.3g} "
                                  f"(max abs; tolerance {CHECK_TOLERANCE})")
            check[stage] = diff
            graphs[stage] = _graph_meta(filename, inputs, dict(zip(outputs, results)))
        meta = _metadata(model, graphs, check, opset, checkpoint)
        with open(Path(tmp) / META_FILE, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        # an earlier export.json goes first: a folder is never a mix that claims to be whole
        (output_dir / META_FILE).unlink(missing_ok=True)
        for stage, _, filename, _ in stages:
            os.replace(Path(tmp) / filename, output_dir / filename)
        stale = output_dir / REFINER_FILE
        if "refiner" not in graphs and stale.exists():
            stale.unlink()  # an earlier export's refiner would not belong to this model
        os.replace(Path(tmp) / META_FILE, output_dir / META_FILE)
    logger.info(f"ONNX export written to {output_dir} (max abs difference to PyTorch: "
                + ", ".join(f"{k} {v:.2g}" for k, v in check.items()) + ")")
    return meta


def cpu_eval_copy(model: IGLRModel) -> IGLRModel:
    """A float32 CPU copy in eval mode when `model` is not one already (never changed)."""
    params = list(model.parameters())
    on_cpu_fp32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
    if on_cpu_fp32 and not model.training:
        return model
    import copy
    return copy.deepcopy(model).float().cpu().eval()


def _graph_meta(filename: str, inputs: Dict[str, torch.Tensor],
                outputs: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """File, input and output names with shapes (dynamic axes as names)."""
    def dims(name: str, shape: Sequence[int]) -> List[Union[int, str]]:
        out: List[Union[int, str]] = ["batch"] + list(shape[1:])
        if name.startswith("points"):
            out[1] = "clicks"
        return out
    return {"file": filename,
            "inputs": {k: dims(k, v.shape) for k, v in inputs.items()},
            "outputs": {k: dims(k, v.shape) for k, v in outputs.items()}}


def _metadata(model: IGLRModel, graphs: Dict[str, Any], check: Dict[str, float], opset: int,
              checkpoint: Optional[str]) -> Dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset,
        "versions": _versions(),
        "checkpoint": checkpoint,
        "model": get_model_config(model),
        "input_size": model.infer_size,
        "refine_size": model.refine_size if "refiner" in graphs else None,
        "feature_size": max(1, model.refine_size // 4) if "refiner" in graphs else None,
        "feature_channels": model.feature_channels,
        "feature_layout": FEATURE_LAYOUT,
        "with_prev_mask": model.with_prev_mask,
        "use_refiner": "refiner" in graphs,
        "normalization": {"input_range": [0.0, 1.0], "channels": "RGB",
                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                          "in_graph": True},
        "clicks": {"layout": "(y, x, order) rows, positives then negatives, each padded with "
                             "(-1, -1, -1) to M = max(#pos, #neg, 1)",
                   "norm_radius": model.norm_radius, "use_disks": model.use_disks},
        "thresholds": {"prediction": PRED_THRESHOLD, "focus_logit": FOCUS_LOGIT_THRESHOLD,
                       "previous_mask": PREV_MASK_THRESHOLD},
        "predictor": {"focus_strategy": model.focus_strategy,
                      "focus_crop_r": model.focus_crop_r,
                      "target_crop_r": model.target_crop_r},
        "graphs": graphs,
        "check_max_abs_diff": check,
    }


def read_export_metadata(export_dir: Union[str, os.PathLike]) -> Dict[str, Any]:
    """export.json of an export folder, checked (one clear error naming the file otherwise)."""
    path = Path(export_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"ONNX export folder '{export_dir}' has no {META_FILE} (write one "
                                f"with scripts/export_onnx.py)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an IGLR ONNX export (expected \"format\": \"{FORMAT}\")")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}, this code "
                         f"reads {FORMAT_VERSION} (version 1 passed the decoder feature NCHW): "
                         f"export the checkpoint again with scripts/export_onnx.py")
    for key in ("graphs", "input_size", "with_prev_mask", "use_refiner", "model"):
        if key not in meta:
            raise ValueError(f"{path}: missing key '{key}'")
    for stage in ("coarse",) + (("refiner",) if meta["use_refiner"] else ()):
        graph = meta["graphs"].get(stage)
        if not graph or not (Path(export_dir) / graph.get("file", "")).is_file():
            raise FileNotFoundError(f"{path}: the {stage} graph file "
                                    f"'{(graph or {}).get('file')}' is missing from {export_dir}")
    return meta
