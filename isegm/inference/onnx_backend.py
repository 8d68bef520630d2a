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
from ..utils.log import logger
from .onnx_export import CHECK_TOLERANCE, COARSE_OUTPUTS, META_FILE, REFINER_INPUTS, \
    REFINER_OUTPUTS, RefinerGraph, coarse_inputs, cpu_eval_copy, default_export_dir, \
    example_inputs, from_nhwc, graph_bytes, graph_feeds, read_export_metadata, to_nhwc

# the equality the 'auto' backend requires of onnxruntime before it uses it (max abs
# difference of the logits to PyTorch)
EQUALITY_TOLERANCE = 1e-4


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
    auto = False  # True: the 'auto' backend's choice (`_chosen`)

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
        return _run_session(self._coarse, feeds, COARSE_OUTPUTS, image.device)

    def forward_refine(self, image_crop: torch.Tensor, points_crop: torch.Tensor,
                       coarse_crop: torch.Tensor,
                       feature_crop: torch.Tensor) -> Dict[str, torch.Tensor]:
        """image_crop (B,3,R,R) in [0,1], points_crop (B,2M,3) in crop pixels, coarse_crop
        (B,1,R,R) logits, feature_crop (B,D,R/4,R/4) -> {'refined', 'boundary'} (B,1,R,R)
        logits, as `IGLRModel.forward_refine`."""
        if self._refiner is None:
            raise RuntimeError(f"the ONNX export in {self.export_dir} has no refiner "
                               f"(use_refiner=False)")
        return _run_refiner(self._refiner, f"ONNX refiner graph ({self.export_dir})",
                            self.refine_size, self.feature_channels,
                            (image_crop, points_crop, coarse_crop, feature_crop))

    def check_matches(self, model: torch.nn.Module, tolerance: float = CHECK_TOLERANCE) -> float:
        """Raise ValueError unless this export is of `model` (an `IGLRModel`, eval mode): the same
        model arguments, and both stages equal to it on random inputs within `tolerance` (max abs
        difference, returned)."""
        config = json.loads(json.dumps(get_model_config(model)))
        if config != self.meta["model"]:
            raise ValueError(f"the ONNX export in {self.export_dir} is of another model: "
                             f"{self.meta['model']} (export.json), {config} (checkpoint)")
        device = next(model.parameters()).device
        diff = max(_max_abs_diff(self, model, stage,
                                 {k: v.to(device) for k, v in example_inputs(model, stage, batch=1,
                                                                              per_sign=2).items()})
                   for stage in (("coarse", "refiner") if self.use_refiner else ("coarse",)))
        if not diff <= tolerance:
            raise ValueError(f"the ONNX export in {self.export_dir} differs from the model by "
                             f"{diff:.3g} (max abs, tolerance {tolerance}): exported from other "
                             f"weights?")
        return diff


def _run_session(session, feeds: Dict[str, torch.Tensor], outputs: Sequence[str],
                 device: torch.device) -> Dict[str, torch.Tensor]:
    """One onnxruntime call on torch tensors; the outputs as tensors on `device` (the decoder
    feature as the model's channels-last map)."""
    arrays = {k: _to_numpy(v) for k, v in feeds.items()}
    results = session.run(list(outputs), arrays)
    out = {k: torch.from_numpy(v).to(device) for k, v in zip(outputs, results)}
    if "feature" in out:  # NHWC from the graph: the model's channels-last (B, D, h, w)
        out["feature"] = from_nhwc(out["feature"])
    return out


def _max_abs_diff(network: Any, model: torch.nn.Module, stage: str,
                  inputs: Dict[str, torch.Tensor]) -> float:
    """Max abs difference between `network`'s and `model`'s outputs of one stage."""
    name = "forward_coarse" if stage == "coarse" else "forward_refine"
    with torch.no_grad():
        want = getattr(model, name)(*inputs.values())
    got = getattr(network, name)(*inputs.values())
    return max(float((got[k] - want[k].float()).abs().max()) for k in got)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 host array of `tensor` (no copy when it is one already)."""
    array = tensor.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(array)


def _run_refiner(session, name: str, refine_size: int, feature_channels: int,
                 inputs: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """One call of a refiner graph on the model's inputs (the feature crop (B, D, R/4, R/4),
    fed NHWC: a view of the channels-last crops the host samples)."""
    image_crop, points_crop, coarse_crop, feature_crop = inputs
    r, f = refine_size, max(1, refine_size // 4)
    if (tuple(image_crop.shape[1:]) != (3, r, r)
            or tuple(feature_crop.shape[1:]) != (feature_channels, f, f)):
        raise ValueError(f"{name} takes image crops (B, 3, {r}, {r}) and feature crops "
                         f"(B, {feature_channels}, {f}, {f}), got {tuple(image_crop.shape)} "
                         f"and {tuple(feature_crop.shape)}")
    feeds = dict(zip(REFINER_INPUTS, (image_crop, points_crop, coarse_crop,
                                      to_nhwc(feature_crop))))
    return _run_session(session, feeds, REFINER_OUTPUTS, image_crop.device)


class InProcessRefiner:
    """`model`'s refiner exported to ONNX in this process (no files) and served by
    onnxruntime: the 'auto' backend's refiner stage (`build_network`). Building it exports
    the refiner (about 3 s here, 6 s for the first export of a process) and checks it against
    the model on random crops (batch 1 and 2, 1 to 6 clicks per sign): ValueError above
    `tolerance` (max abs difference of the logits)."""

    backend = "onnx"

    def __init__(self, model: torch.nn.Module, num_threads: Optional[int] = None,
                 tolerance: float = EQUALITY_TOLERANCE):
        import time

        import onnxruntime as ort
        if getattr(model, "refiner", None) is None:
            raise ValueError("the model has no refiner to export")
        start = time.perf_counter()
        graph_model = cpu_eval_copy(model)
        data = graph_bytes(RefinerGraph(graph_model).eval(),
                           graph_feeds(example_inputs(graph_model, "refiner")), REFINER_OUTPUTS)
        self._session = ort.InferenceSession(data, session_options(num_threads),
                                             providers=["CPUExecutionProvider"])
        _check_names(self._session, REFINER_INPUTS, REFINER_OUTPUTS, "the in-process refiner")
        self.refine_size = int(model.refine_size)
        self.feature_channels = int(model.feature_channels)
        self.fixed_sizes = {"refiner": self.refine_size}
        self.max_abs_diff = max(
            _max_abs_diff(self, graph_model, "refiner",
                          example_inputs(graph_model, "refiner", batch, per_sign, seed=per_sign))
            for batch, per_sign in ((1, 1), (2, 3), (1, 6)))
        if not self.max_abs_diff <= tolerance:
            raise ValueError(f"the refiner's ONNX graph differs from PyTorch by "
                             f"{self.max_abs_diff:.3g} (max abs, tolerance {tolerance})")
        self.seconds = time.perf_counter() - start

    def forward_refine(self, image_crop: torch.Tensor, points_crop: torch.Tensor,
                       coarse_crop: torch.Tensor,
                       feature_crop: torch.Tensor) -> Dict[str, torch.Tensor]:
        """As `IGLRModel.forward_refine` (fixed crop size `refine_size`)."""
        return _run_refiner(self._session, "the in-process ONNX refiner", self.refine_size,
                            self.feature_channels,
                            (image_crop, points_crop, coarse_crop, feature_crop))


def _check_names(session, inputs: Sequence[str], outputs: Sequence[str], filename: str) -> None:
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if got_in != list(inputs) or got_out != list(outputs):
        raise ValueError(f"{filename}: graph inputs {got_in} / outputs {got_out}, expected "
                         f"{list(inputs)} / {list(outputs)}")


NETWORK_BACKENDS = ("torch", "onnx", "auto")
STAGES = ("coarse", "refiner")
# the scripts' --backend default; IGLR_BACKEND=torch keeps PyTorch for both stages everywhere
DEFAULT_BACKEND_ENV = "IGLR_BACKEND"


class StageNetwork:
    """The coarse call of one network and the refiner call of another (e.g. PyTorch's coarse
    stage with onnxruntime's refiner)."""

    auto = False  # True: the 'auto' backend's choice (`_chosen`)

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


def default_backend() -> str:
    """The scripts' --backend default: $IGLR_BACKEND, else 'auto'."""
    value = os.environ.get(DEFAULT_BACKEND_ENV, "auto")
    if value not in NETWORK_BACKENDS:
        raise ValueError(f"{DEFAULT_BACKEND_ENV}='{value}': expected one of "
                         f"{', '.join(NETWORK_BACKENDS)}")
    return value


def add_network_arguments(parser: Any, export_refiner: bool = True) -> None:
    """--backend, --onnx-dir, --onnx-stages of the scripts that run a predictor
    (`export_refiner`: whether their 'auto' exports the refiner in the process)."""
    refiner = ("onnxruntime for the refiner (exported in this process, about 3 s) and PyTorch "
               "for the coarse stage, or onnxruntime for both from --onnx-dir or an export "
               "beside the checkpoint" if export_refiner else
               "onnxruntime for both stages from --onnx-dir or an export beside the checkpoint "
               "(scripts/export_onnx.py --checkpoint CKPT), else PyTorch")
    parser.add_argument("--backend", type=str, default=default_backend(),
                        choices=NETWORK_BACKENDS,
                        help=f"what runs the network. 'auto' (default; $IGLR_BACKEND overrides "
                             f"the default): on the CPU, {refiner}; PyTorch on a GPU. 'torch': "
                             f"PyTorch for both. 'onnx': onnxruntime on the export in --onnx-dir "
                             f"(scripts/export_onnx.py); everything else is the same")
    parser.add_argument("--onnx-dir", type=str, default="",
                        help="ONNX export folder of the checkpoint (--backend onnx or auto)")
    parser.add_argument("--onnx-stages", type=str, default=",".join(STAGES),
                        help="stages that onnxruntime runs from --onnx-dir (comma-separated, "
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


def with_pytorch_stage(network: Any, model: torch.nn.Module, stage: str) -> Any:
    """`network` with `model` (PyTorch) running `stage` ('coarse' or 'refiner'); `model`
    itself when that leaves no stage to another backend. Keeps the 'auto' mark."""
    coarse = model if stage == "coarse" else getattr(network, "coarse", network)
    refine = model if stage == "refiner" else getattr(network, "refine", network)
    if coarse is model and refine is model:
        return model
    result = StageNetwork(coarse, refine)
    result.auto = getattr(network, "auto", False)
    return result


def network_label(network: Any, model: Any) -> str:
    """What runs a built network's stages, as `backend_label` writes it: 'torch', 'onnx' or
    'onnx-<stage>'."""
    if network is None or network is model:
        return "torch"
    if isinstance(network, StageNetwork):
        stages = [stage for stage, net in (("coarse", network.coarse),
                                           ("refiner", network.refine)) if net is not model]
        return backend_label("onnx", stages)
    return "onnx"


def build_network(model: torch.nn.Module, backend: str = "torch",
                  onnx_dir: Optional[Union[str, os.PathLike]] = None,
                  stages: Sequence[str] = STAGES, num_threads: Optional[int] = None,
                  checkpoint: Optional[Union[str, os.PathLike]] = None,
                  export_refiner: bool = True) -> Any:
    """What runs a predictor's two network calls: `model` itself for 'torch'; for 'onnx' the
    export in `onnx_dir` (checked to be of `model`, `OnnxNetwork.check_matches`) for the
    `stages` named ('coarse', 'refiner'), `model` for the others; for 'auto'
    `auto_network` (`checkpoint`: the file `model` was loaded from, whose export it looks for
    beside it; `export_refiner`: whether it may export the refiner in the process)."""
    if backend not in NETWORK_BACKENDS:
        raise ValueError(f"unknown network backend '{backend}'; known: "
                         f"{', '.join(NETWORK_BACKENDS)}")
    if backend == "torch":
        return model
    if backend == "auto":
        return auto_network(model, onnx_dir, stages, num_threads, checkpoint, export_refiner)
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


def auto_network(model: torch.nn.Module, onnx_dir: Optional[Union[str, os.PathLike]] = None,
                 stages: Sequence[str] = STAGES, num_threads: Optional[int] = None,
                 checkpoint: Optional[Union[str, os.PathLike]] = None,
                 export_refiner: bool = True) -> Any:
    """The 'auto' backend: per stage, the faster of PyTorch and onnxruntime on the CPU, where
    they are equal (docs/onnx.md has the measurements). Inside the predictor onnxruntime's
    refiner takes about half PyTorch's time and its coarse stage about 10% less; exporting the
    refiner takes about 3 s, the coarse stage 20-45 s, so the coarse stage runs in onnxruntime
    only from an export made beforehand.

    - `model` not on the CPU, or onnxruntime not installed: `model` (PyTorch).
    - `onnx_dir`: that export for `stages` (as 'onnx': an export of another model is an
      error).
    - the export beside `checkpoint` (`default_export_dir`, written by scripts/export_onnx.py
      without --output), if there is one: onnxruntime for both stages, provided it is of this
      model and equal to it within `EQUALITY_TOLERANCE`; otherwise a warning says why and the
      next rule applies.
    - a model with a refiner, unless `export_refiner` is False (a one-shot run, where the
      export would cost more than it saves): PyTorch's coarse stage and an `InProcessRefiner`
      (exported now, equal to PyTorch within `EQUALITY_TOLERANCE`); if that export fails, a
      warning names why and PyTorch runs both stages.
    The choice is logged. A predictor whose settings a chosen onnxruntime stage cannot serve
    (another input size, ZoomIn crops, autocast) runs that stage in PyTorch instead."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        logger.info(f"network backend: PyTorch on {device} (onnxruntime runs on the CPU here)")
        return model
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        logger.info("network backend: PyTorch (onnxruntime is not installed; "
                    "pip install -e .[onnx] for its faster refiner)")
        return model
    if onnx_dir:
        network = build_network(model, "onnx", onnx_dir, stages, num_threads)
        logger.info(f"network backend: onnxruntime for the "
                    f"{' and '.join(s for s in STAGES if s in stages)} stage(s), export in "
                    f"{onnx_dir}")
        return _chosen(network)
    beside = default_export_dir(checkpoint) if checkpoint is not None else None
    if beside is not None and (beside / META_FILE).is_file():
        try:
            network = OnnxNetwork(beside, num_threads)
            diff = network.check_matches(model, EQUALITY_TOLERANCE)
        except (OSError, ValueError) as e:
            logger.warning(f"network backend: not using the ONNX export beside the checkpoint "
                           f"({e}); export it again with scripts/export_onnx.py --checkpoint "
                           f"{checkpoint}")
        else:
            logger.info(f"network backend: onnxruntime for both stages, export in {beside} "
                        f"(max abs difference to PyTorch {diff:.1g})")
            return _chosen(network)
    if getattr(model, "refiner", None) is None or not export_refiner:
        logger.info("network backend: PyTorch (no ONNX export beside the checkpoint: "
                    "scripts/export_onnx.py --checkpoint CKPT writes one)")
        return model
    try:
        refiner = InProcessRefiner(model, num_threads)
    except Exception as e:  # an export failure must not stop a run that PyTorch can do
        logger.warning(f"network backend: PyTorch (exporting the refiner to ONNX failed: "
                       f"{type(e).__name__}: {e})")
        return model
    logger.info(f"network backend: PyTorch coarse stage, onnxruntime refiner (exported in "
                f"{refiner.seconds:.1f} s; max abs difference to PyTorch "
                f"{refiner.max_abs_diff:.1g})")
    return _chosen(StageNetwork(model, refiner))


def _chosen(network: Any) -> Any:
    """Mark a network as the 'auto' backend's choice: a predictor whose settings a stage of it
    cannot serve (another input size, ZoomIn crops, autocast) runs that stage in PyTorch
    instead of refusing (`IGLRPredictor._check_network_size`)."""
    network.auto = True
    return network
