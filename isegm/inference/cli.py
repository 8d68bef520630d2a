"""Command-line NoC evaluation (the body of `scripts/evaluate_model.py`), importable:
arguments, checkpoint discovery, input validation, and the loop over checkpoints and datasets.
The evaluation itself is `evaluation.py`, the outputs `results.py`, the pictures `utils/vis.py`.

    python scripts/evaluate_model.py NoBRS --gpu=0 --checkpoint=iglr_b0 --eval-mode=cvpr \
        --datasets=GrabCut,Berkeley,DAVIS,SBD

    from isegm.inference.cli import main, parse_args, run_evaluation
    results = run_evaluation(parse_args(["NoBRS", "--checkpoint=...", "--datasets=GrabCut"]))

Everything that can fail on bad input (unknown dataset or predictor names, a missing or
foreign checkpoint, an unconfigured dataset path, an unwritable output folder, and each
evaluated sample's files: present, paired, headers of images, masks of their image's size, read
from the headers without decoding) is checked by `prepare()` before any evaluation starts and
raised as `EvaluationSetupError`: `main` prints it as one line and returns 2.

A file that passes those checks but fails to decode during the run (e.g. a JPEG truncated after
its header) does not stop the evaluation: that sample is skipped with a warning, every other
sample is evaluated and every result is written; the table, the CSV/JSON records (`skipped`,
`skipped_files`) and a list `skipped_<dataset>_<...>.txt` name the skipped files, and `main`
returns 3.

Output folder, under `--logs-path` (default EXPS_PATH/evaluation_logs):
  <family>/<model>/<NNN_name>/<checkpoint stem>/  for a checkpoint of a run folder of EXPS_PATH
      (`<run>/checkpoints/<x>.pth`, as `--exp-path` evaluates them); the table's model name is
      the run, `<family>/<model>/<NNN_name>`
  <run folder name>/<checkpoint stem>/  for such a run folder outside EXPS_PATH
  <checkpoint stem>/  for any other checkpoint; <predictor>/ for the model-free predictors
  <--model-name>/  when given (each checkpoint's files then carry its stem)
So `000_a/checkpoints/last_checkpoint.pth` and `004_b/checkpoints/last_checkpoint.pth` write to
two folders. In a folder:
  results_<predictor>_<eval-mode>_<N>.txt   RITM-style table (appended)
  results_<predictor>_<eval-mode>_<N>.csv   one row per (checkpoint, dataset) (appended)
  results_<predictor>_<eval-mode>_<N>.json  list of the same records (rewritten with new ones)
  ious/<dataset>_<checkpoint>_<predictor>_<eval-mode>.npz   per-sample IoU series (NaN-padded)
  ious/<...>.pkl  RITM's {'all_ious', 'elapsed_time'} pickle with --save-ious
  skipped_<dataset>_<checkpoint>_<predictor>_<eval-mode>.txt  the skipped samples, if any
  vis/<checkpoint>/<dataset>/<sample>_<click>.jpg  with --vis-preds
No result file is overwritten: the tables grow, and a per-sample file (`.npz`, `.pkl`, skipped
list) or `vis/` folder whose name is taken gets the first free suffix `_2`, `_3`, ... (an
evaluation repeated with the same settings keeps both series; `load_ious` reads either).
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..utils.config import Config, ConfigError, ConfigPathError, load_config
from ..utils.device import parse_gpus, select_device
from ..utils.log import logger, setup_logging
from ..utils.serialization import CheckpointError, load_torch_file
from ..utils.vis import draw_prediction
from ..data.io import DatasetError
from ..data.datasets.davis585 import INIT_MASK_MODES, FolderInitMasks
from .crops import ZoomIn
from .evaluation import evaluate_dataset
from .focus import FOCUS_STRATEGIES
from .onnx_backend import add_network_arguments, backend_label, build_network, network_label, \
    parse_stages
from .onnx_export import read_export_metadata
from .predictors import (CLICK_MAPPINGS, EMPTY_MASK_ROIS, MODES, PREDICTORS, get_predictor,
                         predictor_name_for_mode)
from .results import results_table, save_ious, write_records, write_text_atomic
from .utils import (compute_noc_metric, compute_strict_nof, get_iou_thresholds,
                    mean_iou_per_click, percent_key, stop_iou)

EVAL_DATASETS = ("GrabCut", "Berkeley", "DAVIS", "SBD", "SBD_Train", "PascalVOC", "COCO_MVal",
                 "Synthetic", "COCO_MVal_val", "DAVIS585", "ImagesDir")
# `main`'s exit status when samples were skipped because their files do not decode
EXIT_SKIPPED = 3
MODEL_FREE_PREDICTORS = ("cv_grabcut", "oracle", "empty")


class EvaluationSetupError(ValueError):
    """Bad input found before evaluation starts; the message says what and how to fix it."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluate_model.py",
        description="NoC evaluation of interactive segmentation models (RITM protocol).")
    parser.add_argument("mode", help=f"'NoBRS' (the network, one forward pass per click) or a "
                                     f"predictor name: {', '.join(PREDICTORS.names())}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", type=str, default="",
                       help="checkpoint file, or a name (with or without .pth) under "
                            "INTERACTIVE_MODELS_PATH")
    group.add_argument("--exp-path", type=str, default="",
                       help="an experiment run folder (absolute, or relative to EXPS_PATH, a "
                            "prefix like 'iglr/b0/000' is enough): evaluates its checkpoints")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="accept checkpoints that need full unpickling, which can run code "
                             "stored in the file: only for files from a trusted source")
    parser.add_argument("--checkpoints-glob", type=str, default="*.pth",
                        help="which checkpoints of --exp-path to evaluate (default: all *.pth)")
    parser.add_argument("--datasets", type=str, default="GrabCut,Berkeley,DAVIS,SBD",
                        help=f"comma-separated, from: {', '.join(EVAL_DATASETS)}")
    parser.add_argument("--eval-mode", type=str, default="cvpr",
                        help="'cvpr' or 'fixed<S>' (RITM ZoomIn settings of the coarse "
                             "predictor's zoom_in crop mode; the IGLR target crop ignores it)")
    parser.add_argument("--infer-size", type=int, default=None,
                        help="network input size S of the target crop (default: the model's)")
    parser.add_argument("--target-crop-r", type=float, default=None)
    parser.add_argument("--focus-crop-r", type=float, default=None)
    parser.add_argument("--focus-strategy", type=str, default=None, choices=FOCUS_STRATEGIES)
    parser.add_argument("--crop-mode", type=str, default="target", choices=("target", "zoom_in"),
                        help="coarse predictor: FocalClick target crop or RITM ZoomIn")
    parser.add_argument("--empty-mask-roi", type=str, default="stored", choices=EMPTY_MASK_ROIS,
                        help="target crop after an empty previous mask: 'stored' (as released, "
                             "rule 28f: the whole image's output squeezed into the ROI an "
                             "earlier click stored) or 'full' (the whole image)")
    parser.add_argument("--click-mapping", type=str, default="aligned", choices=CLICK_MAPPINGS,
                        help="how clicks enter the resized crops: 'aligned' (where the crops' "
                             "resampling moves the clicked pixel, as the model is trained) or "
                             "'released' (the released IGLR/FocalClick scaling, rules 32, 36)")
    parser.add_argument("--n-clicks", type=int, default=20, help="maximum clicks per sample (N)")
    parser.add_argument("--min-n-clicks", type=int, default=1)
    parser.add_argument("--target-iou", type=float, default=0.90)
    parser.add_argument("--thresh", type=float, default=0.49, help="prediction threshold")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--with-flip", dest="with_flip", action="store_true", default=True,
                      help="horizontal flip averaging (the default, as in IGLR)")
    flip.add_argument("--no-flip", "--no-with-flip", dest="with_flip", action="store_false",
                      help="switch flip averaging off")
    parser.add_argument("--clicks-limit", type=int, default=None,
                        help="feed only the first L clicks to the network (-1: all)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="evaluate only the first K samples of each dataset")
    parser.add_argument("--cpu", action="store_true", help="run on CPU")
    parser.add_argument("--gpus", "--gpu", dest="gpus", type=str, default="",
                        help="GPU id(s), e.g. 0; falls back to CPU with a warning without CUDA")
    parser.add_argument("--print-ious", action="store_true",
                        help="print every sample's IoU series (implies no early stop)")
    parser.add_argument("--iou-analysis", action="store_true",
                        help="run all N clicks and report mIoU per click")
    parser.add_argument("--save-ious", action="store_true",
                        help="also save RITM's pickle of the IoU series")
    parser.add_argument("--vis-preds", action="store_true",
                        help="save every prediction with its clicks drawn")
    parser.add_argument("--logs-path", type=str, default="",
                        help="output root (default: EXPS_PATH/evaluation_logs)")
    parser.add_argument("--model-name", type=str, default=None,
                        help="name of the output folder and table rows")
    parser.add_argument("--config", type=str, default=None, help="another configs.yml")
    boundary = parser.add_argument_group("boundary quality and mask correction")
    boundary.add_argument("--boundary-metrics", action="store_true",
                          help="also score every click's mask by boundary IoU and ASSD (rule 37; "
                               "mBIoU@k / ASSD@k lines with --print-ious, CSV/JSON columns, "
                               "the .npz IoU files); costs a few ms per click")
    boundary.add_argument("--init-mask", type=str, default="stm", choices=INIT_MASK_MODES,
                          help="DAVIS585: which initial masks to correct: 'stm' (video object "
                               "segmentation) or 'sp' (superpixels)")
    boundary.add_argument("--init-masks", type=str, default=None,
                          help="a folder of initial masks <sample id>.png for any dataset: each "
                               "session starts from that mask (mask correction)")
    merge = boundary.add_mutually_exclusive_group()
    merge.add_argument("--progressive-merge", dest="progressive_merge", action="store_true",
                       default=None, help="change the mask only by the XOR component at each "
                                          "click (rule 38; default: on with initial masks)")
    merge.add_argument("--no-progressive-merge", dest="progressive_merge", action="store_false",
                       help="take each new mask whole, also with initial masks")
    add_network_arguments(parser)
    args = parser.parse_args(argv)
    args.target_iou = max(0.8, args.target_iou)
    return args


@dataclass
class EvaluationPlan:
    """Everything `prepare` validated: what to evaluate and where to write.

    `outputs[i]` = (model name of the table rows, output folder) of `checkpoints[i]`."""

    predictor_name_or_mode: str
    checkpoints: List[Optional[Path]]
    datasets: Dict[str, Any]
    device: torch.device
    outputs: List[Tuple[str, Path]]
    cfg: Config
    tables: List[str] = field(default_factory=list)


def _eval_mode(args: argparse.Namespace) -> Optional[int]:
    """None for 'cvpr', S for 'fixed<S>'."""
    if args.eval_mode == "cvpr":
        return None
    match = re.fullmatch(r"fixed(\d+)", args.eval_mode)
    if not match or int(match.group(1)) <= 0:
        raise EvaluationSetupError(f"--eval-mode must be 'cvpr' or 'fixed<S>' (e.g. fixed400), "
                                   f"got '{args.eval_mode}'")
    return int(match.group(1))


def find_checkpoint(cfg: Config, checkpoint: str) -> Path:
    """A checkpoint file path, or a name looked up (recursively) under INTERACTIVE_MODELS_PATH."""
    direct = Path(os.path.expanduser(checkpoint))
    if direct.is_file():
        return direct.resolve()
    models_root = cfg.resolve("INTERACTIVE_MODELS_PATH")
    names = [checkpoint] if checkpoint.endswith(".pth") else [checkpoint, checkpoint + ".pth"]
    for name in names:
        if (models_root / name).is_file():
            return (models_root / name).resolve()
    found: List[Path] = []
    if models_root.is_dir():
        for name in names:
            found += [p for p in models_root.rglob(Path(name).name) if p.is_file()]
    if len(found) == 1:
        return found[0].resolve()
    if len(found) > 1:
        raise EvaluationSetupError(f"checkpoint name '{checkpoint}' matches several files under "
                                   f"{models_root}: {', '.join(map(str, sorted(found)))}; "
                                   f"give a path")
    raise EvaluationSetupError(f"checkpoint '{checkpoint}' not found: no such file, and no "
                               f"'{names[-1]}' under INTERACTIVE_MODELS_PATH={models_root}. "
                               f"No trained IGLR weights have been released (the authors' "
                               f"repository says 'coming soon'): train one as docs/gpu.md "
                               f"describes and pass its checkpoints/last_checkpoint.pth")


def find_exp_run(cfg: Config, exp_path: str) -> Path:
    """The run folder `--exp-path` names: a folder (absolute, or relative to the working
    directory or to EXPS_PATH), or the one folder whose name starts with its last part."""
    path = Path(os.path.expanduser(exp_path))
    if not path.is_absolute() and not path.exists():
        path = cfg.resolve("EXPS_PATH") / exp_path
    if not path.is_dir():
        parent = path.parent
        matches = sorted(p for p in parent.glob(path.name + "*") if p.is_dir()) if parent.is_dir() else []
        if len(matches) != 1:
            raise EvaluationSetupError(
                f"--exp-path '{exp_path}' is not a run folder (looked at {path}"
                + (f"; several runs match: {', '.join(m.name for m in matches)}" if matches else "")
                + ")")
        path = matches[0]
    return path.resolve()


def find_exp_checkpoints(cfg: Config, exp_path: str, pattern: str = "*.pth") -> List[Path]:
    """Checkpoints of a run folder (its checkpoints/ subfolder if present), sorted by name."""
    path = find_exp_run(cfg, exp_path)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    checkpoints = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not checkpoints:
        raise EvaluationSetupError(f"no checkpoints matching '{pattern}' in {folder}")
    return checkpoints


def check_checkpoint(path: Path, trust: bool = False) -> None:
    """Raise if `path` is not an IGLR checkpoint whose weights fit the model its config builds
    (the model is built on the CPU and loaded, then dropped)."""
    from ..model import load_is_model  # deferred: model-free predictors need no model code
    try:
        data = load_torch_file(path, trust=trust)
    except CheckpointError as e:
        raise EvaluationSetupError(str(e)) from e
    if not isinstance(data, dict) or data.get("arch") != "iglr" or "config" not in data \
            or "state_dict" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise EvaluationSetupError(f"checkpoint '{path}' is not an IGLR model checkpoint "
                                   f"(expected 'arch': 'iglr', 'config', 'state_dict'; found "
                                   f"{keys})")
    try:
        load_is_model(data, "cpu", source=str(path))
    except CheckpointError as e:
        raise EvaluationSetupError(str(e)) from e


def run_folder_of(checkpoint: Path) -> Optional[Path]:
    """The run folder of a checkpoint saved by training (`<run>/checkpoints/<x>.pth`), else
    None."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def output_location(logs_root: Path, exps_root: Optional[Path], checkpoint: Optional[Path],
                    run: Optional[Path] = None, model_name: Optional[str] = None,
                    mode: str = "") -> Tuple[str, Path]:
    """(model name of the table rows, output folder) of one checkpoint (see the module
    docstring): by run and checkpoint for a run folder's checkpoint (`run`, or the checkpoint's
    `<run>/checkpoints/`), by the checkpoint's stem otherwise, `model_name` if given."""
    if checkpoint is None:
        name = model_name or mode
        return name, logs_root / name
    run = run if run is not None else run_folder_of(checkpoint)
    if model_name:
        return model_name, logs_root / model_name
    if run is None:
        return checkpoint.stem, logs_root / checkpoint.stem
    label = run.name
    if exps_root is not None:
        try:
            label = run.resolve().relative_to(exps_root.resolve()).as_posix()
        except ValueError:
            pass
    return label, logs_root / label / checkpoint.stem


def fresh_path(path: Path) -> Path:
    """`path` if nothing exists there, else the first free `<stem>_<n><suffix>`, n = 2, 3, ...
    (results are never overwritten)."""
    if not path.exists():
        return path
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[:len(path.name) - len(suffix)]
    n = 2
    while (path.with_name(f"{stem}_{n}{suffix}")).exists():
        n += 1
    return path.with_name(f"{stem}_{n}{suffix}")


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise EvaluationSetupError(f"output folder '{folder}' cannot be written ({e.strerror or e}); "
                                   f"choose another with --logs-path") from e


def prepare(args: argparse.Namespace) -> EvaluationPlan:
    """Validate every input and build the datasets; nothing is evaluated here."""
    from ..data.datasets import get_dataset  # deferred: only the script needs the loaders

    if args.mode not in MODES and args.mode not in PREDICTORS:
        raise EvaluationSetupError(f"unknown mode or predictor '{args.mode}'; known: "
                                   f"{', '.join(list(MODES) + PREDICTORS.names())}")
    _eval_mode(args)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in EVAL_DATASETS]
    if unknown or not names:
        raise EvaluationSetupError(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; "
                                   f"known: {', '.join(EVAL_DATASETS)}")
    if args.n_clicks < 1:
        raise EvaluationSetupError(f"--n-clicks must be >= 1, got {args.n_clicks}")
    try:
        cfg = load_config(args.config)
    except (ConfigPathError, ConfigError) as e:
        raise EvaluationSetupError(str(e)) from e

    needs_model = args.mode not in MODEL_FREE_PREDICTORS
    checkpoints: List[Optional[Path]] = [None]
    if needs_model:
        if args.exp_path:
            checkpoints = list(find_exp_checkpoints(cfg, args.exp_path, args.checkpoints_glob))
        elif args.checkpoint:
            checkpoints = [find_checkpoint(cfg, args.checkpoint)]
        else:
            raise EvaluationSetupError(f"mode '{args.mode}' needs --checkpoint or --exp-path")
        for path in checkpoints:
            check_checkpoint(path, args.trust_checkpoint)
    _check_network_backend(args, needs_model, checkpoints)

    if args.init_masks and not Path(args.init_masks).is_dir():
        raise EvaluationSetupError(f"--init-masks '{args.init_masks}' is not a folder (expected "
                                   f"initial masks <sample id>.png there)")
    if args.max_samples is not None and args.max_samples < 1:
        raise EvaluationSetupError(f"--max-samples must be >= 1, got {args.max_samples}")
    datasets: Dict[str, Any] = {}
    for name in names:
        options = {"init_mask_mode": args.init_mask} if name == "DAVIS585" else {}
        try:
            dataset = get_dataset(name, cfg, **options)
            # the files of the samples to evaluate: present, paired, sizes from the headers
            count = len(dataset) if args.max_samples is None \
                else min(len(dataset), args.max_samples)
            dataset.check_files(range(count))
        except (ConfigPathError, ConfigError, DatasetError) as e:
            raise EvaluationSetupError(f"dataset {name}: {e}") from e
        except KeyError as e:
            raise EvaluationSetupError(f"dataset {name}: {e.args[0] if e.args else e}") from e
        datasets[name] = dataset

    try:
        exps_root = cfg.resolve("EXPS_PATH")
        logs_root = Path(args.logs_path) if args.logs_path else exps_root / "evaluation_logs"
    except ConfigError as e:
        raise EvaluationSetupError(str(e)) from e
    run = find_exp_run(cfg, args.exp_path) if needs_model and args.exp_path else None
    outputs = [output_location(logs_root, exps_root, checkpoint, run, args.model_name,
                               args.mode) for checkpoint in checkpoints]
    for _, output_dir in outputs:
        check_writable(output_dir)

    gpus = parse_gpus(args.gpus)
    if not args.cpu and gpus and not torch.cuda.is_available():
        logger.warning("--gpus=%s requested but CUDA is not available: running on CPU", args.gpus)
    device = select_device(cpu=args.cpu, gpus=gpus)
    return EvaluationPlan(args.mode, checkpoints, datasets, device, outputs, cfg)


def _check_network_backend(args: argparse.Namespace, needs_model: bool,
                           checkpoints: Sequence[Optional[Path]]) -> None:
    """--backend onnx (or auto with --onnx-dir): a model-based mode, one checkpoint, a readable
    export folder, known stages (whether the export is of the checkpoint is checked once the
    model is loaded). --backend auto without --onnx-dir needs nothing."""
    if args.backend == "torch" or (args.backend == "auto" and not args.onnx_dir):
        return
    if not needs_model:
        raise EvaluationSetupError(f"--backend {args.backend} runs a network; predictor "
                                   f"'{args.mode}' has none")
    if len(checkpoints) != 1:
        raise EvaluationSetupError(f"--backend {args.backend} evaluates one checkpoint (its "
                                   f"export in --onnx-dir), --exp-path gave {len(checkpoints)}")
    if not args.onnx_dir:
        raise EvaluationSetupError("--backend onnx needs --onnx-dir (an export folder written "
                                   "by scripts/export_onnx.py)")
    try:
        parse_stages(args.onnx_stages)
    except ValueError as e:
        raise EvaluationSetupError(f"--onnx-stages: {e}") from e
    try:
        read_export_metadata(args.onnx_dir)
    except (OSError, ValueError) as e:
        raise EvaluationSetupError(f"--onnx-dir: {e}") from e


def _network(args: argparse.Namespace, model: Any, checkpoint: Optional[Path]) -> Any:
    """The network backend of the predictors (the model itself for PyTorch)."""
    if args.backend == "torch" or model is None:
        return model
    try:
        return build_network(model, args.backend, args.onnx_dir, parse_stages(args.onnx_stages),
                             checkpoint=checkpoint)
    except (OSError, ValueError) as e:
        raise EvaluationSetupError(f"--onnx-dir {args.onnx_dir}: {e}") from e


def _zoom_in_for(args: argparse.Namespace, dataset_name: str) -> ZoomIn:
    fixed = _eval_mode(args)
    if fixed is None:
        return ZoomIn(target_size=600 if dataset_name == "DAVIS" else 400, skip_clicks=1)
    return ZoomIn(target_size=(fixed, fixed), skip_clicks=-1)


CSV_FIELDS = ("date", "model", "checkpoint", "predictor", "dataset", "num_samples", "NoC@80",
              "NoC@85", "NoC@90", "NoC@95", "NoF@85", "NoF@90", "strict_NoF@85",
              "strict_NoF@90", "init_IoU", "mBIoU", "mASSD", "spc_s", "spi_s", "time_s",
              "clicks", "n_clicks", "target_iou", "eval_mode", "with_flip", "infer_size",
              "skipped")


def _vis_writer(vis_dir: Path, thresh: float):
    """An evaluation callback that saves every prediction with its clicks as a JPEG."""
    vis_dir.mkdir(parents=True, exist_ok=True)

    def callback(image, gt_mask, probs, sample_id, click_indx, clicks):
        vis = draw_prediction(image, probs, clicks, thresh, gt_mask)
        cv2.imwrite(str(vis_dir / f"{sample_id}_{click_indx + 1:02d}.jpg"),
                    cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
    return callback


def run_evaluation(args: argparse.Namespace,
                   echo: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Validate, evaluate every (checkpoint, dataset), write all outputs; returns the records.

    `echo` receives the final text (tables, --print-ious series, mIoU per click); by default
    it goes to the project logger (`main` prints it)."""
    echo = echo or logger.info
    plan = prepare(args)
    from ..model import load_is_model  # deferred: model-free predictors need no model code

    tau_stop = stop_iou(args.target_iou, args.iou_analysis or args.print_ious, args.min_n_clicks)
    iou_thrs = get_iou_thresholds(args.target_iou if tau_stop <= 1.0 else 0.95)
    extra = percent_key(args.target_iou) if int(100 * args.target_iou) not in (80, 85, 90) else None
    if extra and extra not in {percent_key(t) for t in iou_thrs} and args.target_iou <= 1.0:
        iou_thrs.append(args.target_iou)
    # results of a backend chosen with --backend onnx go to their own files, beside
    # PyTorch's; 'auto' writes PyTorch's files (its onnxruntime stages are equal to PyTorch
    # within 1e-4) and names the backend in the records and the table's header
    file_backend = (backend_label(args.backend, parse_stages(args.onnx_stages))
                    if args.backend == "onnx" else "torch")
    suffix = (f"{args.eval_mode}_{args.n_clicks}" if file_backend == "torch"
              else f"{file_backend}_{args.eval_mode}_{args.n_clicks}")
    records: List[Dict[str, Any]] = []
    init_masks = FolderInitMasks(args.init_masks) if args.init_masks else None
    for checkpoint, (model_name, output_dir) in zip(plan.checkpoints, plan.outputs):
        ious_dir = output_dir / "ious"
        ious_dir.mkdir(parents=True, exist_ok=True)
        model = load_is_model(checkpoint, plan.device, trust=args.trust_checkpoint) \
            if checkpoint is not None else None
        network = _network(args, model, checkpoint)
        predictor_name = predictor_name_for_mode(args.mode, model)
        ckpt_name = checkpoint.stem if checkpoint is not None else "none"
        rows = []
        for ds_name, dataset in plan.datasets.items():
            try:
                predictor = get_predictor(
                    predictor_name, model, plan.device, clicks_limit=args.clicks_limit,
                    with_flip=args.with_flip, infer_size=args.infer_size,
                    target_crop_r=args.target_crop_r, focus_crop_r=args.focus_crop_r,
                    focus_strategy=args.focus_strategy, crop_mode=args.crop_mode,
                    empty_mask_roi=args.empty_mask_roi, click_mapping=args.click_mapping,
                    zoom_in=_zoom_in_for(args, ds_name), network=network)
            except ValueError as e:  # e.g. --infer-size against the sizes of --onnx-dir
                raise EvaluationSetupError(f"predictor '{predictor_name}': {e}") from e
            # what runs the stages: 'auto' may give a stage back to PyTorch for the settings
            backend = network_label(getattr(predictor, "network", None),
                                    getattr(predictor, "model", None))
            indices = None
            if args.max_samples is not None:
                indices = list(range(min(len(dataset), args.max_samples)))
            callback = None
            if args.vis_preds:
                callback = _vis_writer(fresh_path(output_dir / "vis" / ckpt_name / ds_name),
                                       args.thresh)
            logger.info("Evaluating %s on %s (%s, predictor %s, %s samples) on %s", ckpt_name,
                        ds_name, args.mode, predictor_name,
                        len(indices) if indices is not None else len(dataset), plan.device)
            stats: Dict[str, Any] = {}
            all_ious, elapsed = evaluate_dataset(
                dataset, predictor, indices=indices, callback=callback, stats=stats,
                max_iou_thr=tau_stop, pred_thr=args.thresh, min_clicks=args.min_n_clicks,
                max_clicks=args.n_clicks, init_masks=init_masks, merge=args.progressive_merge,
                boundary_metrics=args.boundary_metrics, skip_unreadable=True)
            noc, nof = compute_noc_metric(all_ious, iou_thrs, args.n_clicks)
            clicks = int(stats.get("clicks", 0))
            record: Dict[str, Any] = {
                "date": f"{datetime.now():%Y-%m-%d %H:%M:%S}", "model": model_name,
                "checkpoint": str(checkpoint) if checkpoint else "", "predictor": predictor_name,
                "dataset": ds_name, "num_samples": len(all_ious), "clicks": clicks,
                "spc_s": elapsed / max(clicks, 1), "spi_s": elapsed / max(len(all_ious), 1),
                "time_s": elapsed, "model_s": stats.get("model_s", 0.0),
                "n_clicks": args.n_clicks, "target_iou": args.target_iou,
                "eval_mode": args.eval_mode, "with_flip": args.with_flip,
                "infer_size": getattr(predictor, "infer_size", None), "backend": backend,
                "skipped": len(stats["skipped"]),
                "skipped_files": [item["file"] for item in stats["skipped"]]}
            for thr, n, f in zip(iou_thrs, noc, nof):
                record[f"NoC@{percent_key(thr)}"] = n
                record[f"NoF@{percent_key(thr)}"] = f
            for thr in (0.85, 0.90):
                if thr <= tau_stop:
                    record[f"strict_NoF@{percent_key(thr)}"] = compute_strict_nof(all_ious, thr)
            if stats.get("init_iou"):
                record["init_IoU"] = float(np.mean(stats["init_iou"]))
            if args.boundary_metrics:
                record["mBIoU"] = float(np.mean(np.concatenate(stats["biou"])))
                record["mASSD"] = float(np.mean(np.concatenate(stats["assd"])))
            if tau_stop > 1.0:
                record["mIoU_per_click"] = [round(float(v), 6) for v in mean_iou_per_click(all_ious)]
                if args.boundary_metrics:
                    record["mBIoU_per_click"] = [round(float(v), 6)
                                                 for v in mean_iou_per_click(stats["biou"])]
                    record["mASSD_per_click"] = [round(float(v), 4)
                                                 for v in mean_iou_per_click(stats["assd"])]
            meta = {k: record[k] for k in ("model", "checkpoint", "predictor", "dataset",
                                           "n_clicks", "eval_mode", "with_flip", "backend")}
            meta["max_iou_thr"] = tau_stop
            stem = f"{ds_name}_{ckpt_name}_{predictor_name}_{args.eval_mode}"
            if file_backend != "torch":
                stem += f"_{file_backend}"
            if stats["skipped"]:
                skipped_path = fresh_path(output_dir / f"skipped_{stem}.txt")
                write_text_atomic(skipped_path, "".join(
                    f"{item['index']}\t{item['file']}\t{item['error']}\n"
                    for item in stats["skipped"]))
                record["skipped_list"] = str(skipped_path)
            save_ious(fresh_path(ious_dir / f"{stem}.npz"), all_ious,
                      stats.get("sample_ids", []), meta,
                      args.n_clicks,
                      series={k: stats[k] for k in ("biou", "assd") if stats.get(k)},
                      init_iou=stats.get("init_iou") or None)
            if args.save_ious:
                with open(fresh_path(ious_dir / f"{stem}.pkl"), "xb") as f:
                    pickle.dump({"all_ious": all_ious, "elapsed_time": elapsed}, f)
            if args.print_ious:
                for sid, ious in zip(stats.get("sample_ids", []), all_ious):
                    echo(f"{ds_name} {sid}: " + " ".join(f"{v:.4f}" for v in ious))
            if "init_IoU" in record:
                echo(f"{ds_name} initial masks: mIoU@0 {record['init_IoU']:.4f}")
            if tau_stop > 1.0:
                for key, label, digits in (("mIoU_per_click", "mIoU", 4),
                                           ("mBIoU_per_click", "mBIoU", 4),
                                           ("mASSD_per_click", "ASSD", 2)):
                    if key in record:
                        echo(f"{ds_name} {label}@k: " + ", ".join(
                            f"{k + 1}:{v:.{digits}f}" for k, v in enumerate(record[key])))
            records.append(record)
            rows.append(record)
        table = results_table(rows, args.n_clicks, extra)
        table += "".join(
            f"\n{r['dataset']}: {r['skipped']} sample(s) skipped, their files could not be "
            f"read: {', '.join(Path(f).name for f in r['skipped_files'])} (list: {r['skipped_list']})"
            for r in rows if r["skipped"])
        header = f"Eval results for model: {model_name} ({ckpt_name})"
        if backend != "torch":
            header += f", network backend {backend}"
        echo(f"{header}\n{table}")
        plan.tables.append(table)
        write_records(output_dir / f"results_{args.mode}_{suffix}", rows, CSV_FIELDS,
                      f"{datetime.now():%Y-%m-%d %H:%M:%S}\n{header}\n{table}\n\n", append=True)
        logger.info("Results written to %s", output_dir)
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status: 0, 2 on bad input (the reason on stderr, one
    line), `EXIT_SKIPPED` (3) when samples were skipped because their files do not decode
    (every other result is written; one line on stderr names the lists)."""
    args = parse_args(argv)
    if not logger.handlers:
        setup_logging()
    try:
        records = run_evaluation(args, echo=print)
    except EvaluationSetupError as e:
        print(f"evaluate_model.py: error: {e}", file=sys.stderr)
        return 2
    skipped = [r for r in records if r["skipped"]]
    if skipped:
        print(f"evaluate_model.py: {sum(r['skipped'] for r in skipped)} sample(s) skipped "
              f"because their files could not be read; every other result is written; listed in "
              f"{', '.join(r['skipped_list'] for r in skipped)}", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


__all__ = ["EVAL_DATASETS", "EXIT_SKIPPED", "EvaluationSetupError", "find_checkpoint",
           "find_exp_checkpoints", "find_exp_run", "fresh_path", "main", "output_location",
           "parse_args", "prepare", "run_evaluation"]
