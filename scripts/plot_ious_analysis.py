"""mIoU-versus-clicks curves of several runs and datasets in one PNG.

Reads the IoU files that `evaluate_model.py` writes (`<logs>/<model>/ious/*.npz`; run it with
`--iou-analysis` so every series has all N clicks), one subplot per dataset, one curve per run:

    python scripts/plot_ious_analysis.py --folder experiments/evaluation_logs \
        --datasets GrabCut,Berkeley --output mIoU_curves.png
    python scripts/plot_ious_analysis.py --files a.npz b.npz --labels B0 B3 --output cmp.png
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from isegm.inference.runner import load_ious  # noqa: E402
from isegm.inference.utils import mean_iou_per_click  # noqa: E402


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
                   datasets: Optional[Sequence[str]] = None
                   ) -> Dict[str, List[Tuple[str, np.ndarray]]]:
    """{dataset: [(label, mIoU per click (K,)), ...]} from IoU files."""
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"{len(labels)} labels given for {len(files)} files")
    curves: Dict[str, List[Tuple[str, np.ndarray]]] = defaultdict(list)
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
        curves[dataset].append((label, mean_iou_per_click(data["all_ious"])))
    return dict(curves)


def plot_curves(curves: Dict[str, List[Tuple[str, np.ndarray]]], output: Path, title: str) -> Path:
    if not curves:
        raise ValueError("no IoU series to plot (check --folder/--files and --datasets)")
    names = sorted(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, miou in curves[name]:
            ax.plot(np.arange(1, len(miou) + 1), miou, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("number of clicks")
        ax.set_ylabel("mIoU")
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # clicks are whole numbers
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


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
        curves = collect_curves(files, args.labels if args.files and not args.folder else None,
                                datasets)
        path = plot_curves(curves, Path(args.output), args.title)
    except ValueError as e:
        print(f"plot_ious_analysis.py: error: {e}", file=sys.stderr)
        return 2
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
