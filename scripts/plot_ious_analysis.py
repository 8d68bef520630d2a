"""mIoU-versus-clicks curves of several runs and datasets in one PNG.

Reads the IoU files that `evaluate_model.py` writes (`<logs>/<run>/<checkpoint>/ious/*.npz`,
found recursively; run it with `--iou-analysis` so every series has all N clicks), one subplot
per dataset, one curve per run;
files written with `--boundary-metrics` add a second row of panels, mBIoU versus clicks:

    python scripts/plot_ious_analysis.py --folder experiments/evaluation_logs \
        --datasets GrabCut,Berkeley --output mIoU_curves.png
    python scripts/plot_ious_analysis.py --files a.npz b.npz --labels B0 B3 --output cmp.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from isegm.inference.results import load_ious
from isegm.inference.utils import mean_iou_per_click
from isegm.utils.vis import plot_miou_curves


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=str, default=None,
                        help="search this folder recursively for ious/*.npz")
    parser.add_argument("--files", nargs="*", default=[], help="explicit IoU files (.npz)")
    parser.add_argument("--labels", nargs="*", default=None,
                        help="curve labels for --files (default: model / checkpoint / predictor)")
    parser.add_argument("--datasets", type=str, default=None,
                        help="comma-separated subset of datasets to plot")
    parser.add_argument("--output", type=str, required=True, help="PNG path")
    parser.add_argument("--title", type=str, default="mIoU vs. number of clicks")
    return parser.parse_args(argv)


def collect_curves(files: Sequence[Path], labels: Optional[Sequence[str]] = None,
                   datasets: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """One row per IoU file for `plot_miou_curves`: {'model': label, 'dataset', 'num_samples',
    'seeds': 1, 'mIoU_curve': mIoU per click}, datasets in name order."""
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"{len(labels)} labels given for {len(files)} files")
    rows: List[Dict[str, Any]] = []
    for i, path in enumerate(files):
        data = load_ious(path)
        meta = data["meta"]
        dataset = meta.get("dataset", Path(path).stem.split("_")[0])
        if datasets and dataset not in datasets:
            continue
        if labels is not None:
            label = labels[i]
        else:
            ckpt = Path(meta.get("checkpoint") or "").stem
            label = "/".join(x for x in (meta.get("model"), ckpt, meta.get("predictor")) if x)
        lengths = {len(x) for x in data["all_ious"]}
        if len(lengths) > 1:
            print(f"warning: {path} holds early-stopped series (lengths {sorted(lengths)}); "
                  f"curves are truncated to the shortest. Evaluate with --iou-analysis.",
                  file=sys.stderr)
        row = {"model": label, "dataset": dataset, "num_samples": len(data["all_ious"]),
               "seeds": 1, "mIoU_curve": mean_iou_per_click(data["all_ious"]).tolist()}
        if "all_biou" in data:  # evaluated with --boundary-metrics: a boundary-IoU panel too
            row["mBIoU_curve"] = mean_iou_per_click(data["all_biou"]).tolist()
        rows.append(row)
    return sorted(rows, key=lambda r: r["dataset"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    files = [Path(f) for f in args.files]
    if args.folder:
        files += sorted(Path(args.folder).rglob("ious/*.npz"))
    missing = [f for f in files if not f.is_file()]
    if missing:
        print(f"plot_ious_analysis.py: error: IoU file '{missing[0]}' does not exist", file=sys.stderr)
        return 2
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    try:
        rows = collect_curves(files, args.labels if args.files and not args.folder else None,
                              datasets)
        if not rows:
            raise ValueError("no IoU series to plot (check --folder/--files and --datasets)")
        path = plot_miou_curves(rows, Path(args.output), args.title)
    except ValueError as e:
        print(f"plot_ious_analysis.py: error: {e}", file=sys.stderr)
        return 2
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
