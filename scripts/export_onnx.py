"""Export an IGLR checkpoint's two network stages to ONNX (an export folder for onnxruntime).

    python scripts/export_onnx.py --checkpoint runs/best_checkpoint.pth   # -> runs/best_checkpoint_onnx
    python scripts/evaluate_model.py NoBRS --checkpoint=runs/best_checkpoint.pth   # uses it on the CPU
    python scripts/export_onnx.py --checkpoint CKPT --output exports/b0_s2
    python scripts/evaluate_model.py NoBRS --checkpoint=CKPT --backend onnx --onnx-dir exports/b0_s2

Writes into --output (default: `<stem>_onnx` beside the checkpoint, the folder where the
scripts' default backend, 'auto', finds it on the CPU): coarse.onnx (the network on the target
crop: image, clicks with a dynamic click axis, previous mask -> coarse logits and the decoder
feature, NHWC), refiner.onnx (the refiner on crops ROI-sampled on the host; absent for models
without the refiner) and export.json (input sizes, normalisation, thresholds, the checkpoint's
model arguments, opset, exporting versions, and the export's own check against PyTorch). See
docs/onnx.md and isegm/inference/onnx_export.py.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export, non-strict, then onnxscript), opset 20.
The legacy TorchScript exporter (opset 17) also exports both stages, and ten times faster (tiny
B0 coarse stage on this CPU: 5 s against 40-60 s), but not with a dynamic batch axis: the
tracer then records the stage sizes derived from the input shape as graph values, and the
adaptive pooling of the IGA maps refuses to export ("output_size is not constant"). The
predictors run the coarse graph with batch 1, or 2 with flip averaging, so with the legacy
exporter that would be two coarse graphs. torch.export also checks the requested dynamic axes
(batch, click count) against the code and fails instead of silently specialising a graph; the
TorchScript exporter is deprecated (the torch.export-based one is the default since torch 2.9).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from isegm.inference.onnx_export import OPSET, ExportError, default_export_dir, \
    export_onnx  # noqa: E402
from isegm.model import load_is_model  # noqa: E402
from isegm.utils.log import logger, setup_logging  # noqa: E402
from isegm.utils.serialization import CheckpointError  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="IGLR checkpoint file (.pth written by training)")
    parser.add_argument("--output", type=Path, default=None,
                        help="export folder (created; coarse.onnx, refiner.onnx and export.json "
                             "in it are replaced). Default: <stem>_onnx beside the checkpoint, "
                             "where --backend auto (the scripts' default) looks for it")
    parser.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset of the dynamo exporter (default {OPSET})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch / onnxruntime threads for the export and its check")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    torch.set_num_threads(max(1, args.threads))
    try:
        model = load_is_model(args.checkpoint, device="cpu")
        output = args.output or default_export_dir(args.checkpoint)
        export_onnx(model, output, opset=args.opset, checkpoint=str(args.checkpoint))
    except (CheckpointError, ExportError, OSError) as e:
        logger.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
