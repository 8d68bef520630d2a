"""onnxruntime backend for the predictors' two network calls (docs/onnx.md).

    network = OnnxNetwork("exports/b0_s2")        # folder written by scripts/export_onnx.py
    coarse = network.forward_coarse(image, points, prev_mask)
    refined = network.forward_refine(image_crop, points_crop, coarse_crop, feature_crop)
    network = build_network(model, "onnx", "exports/b0_s2", stages=("refiner",))
    predictor = get_predictor("iglr", model, network=network)

`forward_coarse` / `forward_refine` take and return the same torch tensors (and dict keys) as
`IGLRModel.forward_coarse` / `forward_refine`; the model's attributes (`infer_size`,
`refine_size`, `with_prev_mask`, `use_refiner`, `focus_strategy`, ...) come from the export's
metadata. Sessions run on the CPU with `torch.get_num_threads()` intra-op threads (read when
the network is built), one inter-op thread and idle threads that sleep instead of spinning
(docs/onnx.md has the measurements).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..utils.serialization import get_model_config
from .onnx_export import CHECK_TOLERANCE, COARSE_OUTPUTS, REFINER_INPUTS, REFINER_OUTPUTS, \
    coarse_inputs, example_inputs, from_nhwc, read_export_metadata, to_nhwc


def session_options(num_threads: Optional[int] = None):
    """onnxruntime SessionOptions: `num_threads` (default `torch.get_num_threads()`) intra-op
    threads, one inter-op thread, sequential execution, no spinning of idle threads."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxNetwork:
    """The two network calls of an exported `IGLRModel`, served by onnxruntime (CPU).

    Inputs may live on any device and in any memory format; outputs are float32 tensors on the
    device of the first input. Spatial sizes are fixed by the export (`infer_size` for the
    coarse stage, `refine_size` and `refine_size // 4` for the refiner); batch and click count
    are free.
    """

    backend = "onnx"

    def __init__(self, export_dir: Union[str, os.PathLike], num_threads: Optional[int] = None):
        import onnxruntime as ort
        self.export_dir = Path(export_dir)
        meta = read_export_metadata(self.export_dir)
        self.meta: Dict[str, Any] = meta
        params = meta["model"].get("params", {})
        self.infer_size = int(meta["input_size"])
        self.refine_size = int(meta["refine_size"]) if meta["use_refiner"] else None
        self.feature_channels = int(meta["feature_channels"])
        self.with_prev_mask = bool(meta["with_prev_mask"])
        self.use_refiner = bool(meta["use_refiner"])
        self.pipeline = params.get("pipeline")
        self.backbone_name = params.get("backbone")
        predictor = meta.get("predictor", {})
        self.focus_strategy = predictor.get("focus_strategy", "diff")
        self.focus_crop_r = float(predictor.get("focus_crop_r", 1.4))
        self.target_crop_r = float(predictor.get("target_crop_r", 1.4))
        options = session_options(num_threads)
        providers = ["CPUExecutionProvider"]
        graphs = meta["graphs"]
        self._coarse = ort.InferenceSession(str(self.export_dir / graphs["coarse"]["file"]),
                                            options, providers=providers)
        self._refiner = (ort.InferenceSession(str(self.export_dir / graphs["refiner"]["file"]),
                                              options, providers=providers)
                         if self.use_refiner else None)
        self._coarse_inputs = coarse_inputs(self.with_prev_mask)
        _check_names(self._coarse, self._coarse_inputs, COARSE_OUTPUTS, graphs["coarse"]["file"])
        if self._refiner is not None:
            _check_names(self._refiner, REFINER_INPUTS, REFINER_OUTPUTS,
                         graphs["refiner"]["file"])

    @property
    def fixed_sizes(self) -> Dict[str, int]:
        """The input size of each exported stage (the graphs' spatial sizes are fixed)."""
        sizes = {"coarse": self.infer_size}
        if self.refine_size is not None:
            sizes["refiner"] = self.refine_size
        return sizes

    @property
    def refiner(self) -> Optional[object]:
        """The refiner session, or None for models exported without the refiner (the
        predictors test `model.refiner is None`)."""
        return self._refiner

    def forward_coarse(self, image: torch.Tensor, points: torch.Tensor,
                       prev_mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """image (B,3,S,S) in [0,1], points (B,2M,3), prev_mask (B,1,S,S) probabilities or None
        -> {'instances': (B,1,S,S) logits, 'instances_lowres': (B,1,S/4,S/4) logits,
        'feature': (B,D,S/4,S/4)}, as `IGLRModel.forward_coarse`."""
        s = self.infer_size
        if tuple(image.shape[1:]) != (3, s, s):
            raise ValueError(f"ONNX coarse graph ({self.export_dir}) takes images "
                             f"(B, 3, {s}, {s}), got {tuple(image.shape)}")
        feeds = {"image": image, "points": points}
        if self.with_prev_mask:
            feeds["prev_mask"] = (prev_mask if prev_mask is not None
                                  else image.new_zeros(image.shape[0], 1, s, s))
        return self._run(self._coarse, feeds, COARSE_OUTPUTS, image.device)

    def forward_refine(self, image_crop: torch.Tensor, points_crop: torch.Tensor,
                       coarse_crop: torch.Tensor,
                       feature_crop: torch.Tensor) -> Dict[str, torch.Tensor]:
        """image_crop (B,3,R,R) in [0,1], points_crop (B,2M,3) in crop pixels, coarse_crop
        (B,1,R,R) logits, feature_crop (B,D,R/4,R/4) -> {'refined', 'boundary'} (B,1,R,R)
        logits, as `IGLRModel.forward_refine`."""
        if self._refiner is None:
            raise RuntimeError(f"the ONNX export in {self.export_dir} has no refiner "
                               f"(use_refiner=False)")
        r, f = self.refine_size, max(1, self.refine_size // 4)
        if (tuple(image_crop.shape[1:]) != (3, r, r)
                or tuple(feature_crop.shape[1:]) != (self.feature_channels, f, f)):
            raise ValueError(f"ONNX refiner graph ({self.export_dir}) takes image crops "
                             f"(B, 3, {r}, {r}) and feature crops (B, {self.feature_channels}, "
                             f"{f}, {f}), got {tuple(image_crop.shape)} and "
                             f"{tuple(feature_crop.shape)}")
        # the graph takes the feature NHWC: a view of the channels-last crops the host samples
        feeds = dict(zip(REFINER_INPUTS, (image_crop, points_crop, coarse_crop,
                                          to_nhwc(feature_crop))))
        return self._run(self._refiner, feeds, REFINER_OUTPUTS, image_crop.device)

    def check_matches(self, model: torch.nn.Module, tolerance: float = CHECK_TOLERANCE) -> float:
        """Raise ValueError unless this export is of `model` (an `IGLRModel`, eval mode): the same
        model arguments, and both stages equal to it on random inputs within `tolerance` (max abs
        difference, returned)."""
        config = json.loads(json.dumps(get_model_config(model)))
        if config != self.meta["model"]:
            raise ValueError(f"the ONNX export in {self.export_dir} is of another model: "
                             f"{self.meta['model']} (export.json), {config} (checkpoint)")
        diff = 0.0
        for stage in ("coarse", "refiner") if self.use_refiner else ("coarse",):
            inputs = {k: v.to(next(model.parameters()).device)
                      for k, v in example_inputs(model, stage, batch=1, per_sign=2).items()}
            call = self.forward_coarse if stage == "coarse" else self.forward_refine
            with torch.no_grad():
                want = (model.forward_coarse if stage == "coarse" else model.forward_refine)(
                    *inputs.values())
            got = call(*inputs.values())
            diff = max(diff, max(float((got[k] - want[k].float()).abs().max()) for k in got))
        if not diff <= tolerance:
            raise ValueError(f"the ONNX export in {self.export_dir} differs from the model by "
                             f"{diff:.3g} (max abs, tolerance {tolerance}): exported from other "
                             f"weights?")
        return diff

    @staticmethod
    def _run(session, feeds: Dict[str, torch.Tensor], outputs: Sequence[str],
             device: torch.device) -> Dict[str, torch.Tensor]:
        arrays = {k: _to_numpy(v) for k, v in feeds.items()}
        results = session.run(list(outputs), arrays)
        out = {k: torch.from_numpy(v).to(device) for k, v in zip(outputs, results)}
        if "feature" in out:  # NHWC from the graph: the model's channels-last (B, D, h, w)
            out["feature"] = from_nhwc(out["feature"])
        return out


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 host array of `tensor` (no copy when it is one already)."""
    array = tensor.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(array)


def _check_names(session, inputs: Sequence[str], outputs: Sequence[str], filename: str) -> None:
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if got_in != list(inputs) or got_out != list(outputs):
        raise ValueError(f"{filename}: graph inputs {got_in} / outputs {got_out}, expected "
                         f"{list(inputs)} / {list(outputs)}")


NETWORK_BACKENDS = ("torch", "onnx")
STAGES = ("coarse", "refiner")


class StageNetwork:
    """The coarse call of one network and the refiner call of another (e.g. PyTorch's coarse
    stage with onnxruntime's refiner)."""

    def __init__(self, coarse: Any, refine: Any):
        self.coarse = coarse
        self.refine = refine
        self.fixed_sizes: Dict[str, int] = {}
        for stage, net in (("coarse", coarse), ("refiner", refine)):
            size = getattr(net, "fixed_sizes", {}).get(stage)
            if size is not None:
                self.fixed_sizes[stage] = size

    def forward_coarse(self, *args: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.coarse.forward_coarse(*args)

    def forward_refine(self, *args: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.refine.forward_refine(*args)


def add_network_arguments(parser: Any) -> None:
    """--backend, --onnx-dir, --onnx-stages of the scripts that run a predictor."""
    parser.add_argument("--backend", type=str, default="torch", choices=NETWORK_BACKENDS,
                        help="what runs the network: PyTorch, or onnxruntime on the export in "
                             "--onnx-dir (scripts/export_onnx.py); everything else is the same")
    parser.add_argument("--onnx-dir", type=str, default="",
                        help="ONNX export folder of the checkpoint (--backend onnx)")
    parser.add_argument("--onnx-stages", type=str, default=",".join(STAGES),
                        help="stages that onnxruntime runs with --backend onnx (comma-separated, "
                             "from: coarse, refiner); PyTorch runs the others")


def parse_stages(text: str) -> List[str]:
    """'coarse,refiner' -> ['coarse', 'refiner'] (ValueError for unknown or no stages)."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages or any(s not in STAGES for s in stages):
        raise ValueError(f"ONNX stages must be a comma-separated subset of "
                         f"{', '.join(STAGES)}, got '{text}'")
    return stages


def backend_label(backend: str, stages: Sequence[str] = STAGES) -> str:
    """'torch', 'onnx', or 'onnx-<stage>' when onnxruntime runs one stage only (result rows,
    file names)."""
    if backend == "torch":
        return "torch"
    return backend if set(stages) == set(STAGES) else f"{backend}-" + "-".join(stages)


def build_network(model: torch.nn.Module, backend: str = "torch",
                  onnx_dir: Optional[Union[str, os.PathLike]] = None,
                  stages: Sequence[str] = STAGES, num_threads: Optional[int] = None) -> Any:
    """What runs a predictor's two network calls: `model` itself for 'torch'; for 'onnx' the
    export in `onnx_dir` (checked to be of `model`, `OnnxNetwork.check_matches`) for the
    `stages` named ('coarse', 'refiner'), `model` for the others."""
    if backend not in NETWORK_BACKENDS:
        raise ValueError(f"unknown network backend '{backend}'; known: "
                         f"{', '.join(NETWORK_BACKENDS)}")
    if backend == "torch":
        return model
    if not onnx_dir:
        raise ValueError("the 'onnx' network backend needs an export folder (--onnx-dir), "
                         "written by scripts/export_onnx.py")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"ONNX stages must be a non-empty subset of {', '.join(STAGES)}, got "
                         f"{', '.join(stages) or 'none'}")
    network = OnnxNetwork(onnx_dir, num_threads)
    if "refiner" in stages and not network.use_refiner:
        raise ValueError(f"the ONNX export in {onnx_dir} has no refiner graph")
    network.check_matches(model)
    if set(stages) == set(STAGES) or not network.use_refiner:
        return network
    return StageNetwork(network if "coarse" in stages else model,
                        network if "refiner" in stages else model)
