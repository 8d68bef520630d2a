"""NoC evaluation with full click series, result tables and mIoU-versus-clicks figures.

    result = evaluate_noc(get_predictor("iglr", model), dataset, label="trained", n_clicks=20)
    result.metrics()     # {'NoC@85': ..., 'NoC@90': ..., 'NoF@90': ..., 'mIoU@1': ..., ...}
    rows = aggregate([result, ...])                       # mean (and std over seeds) per label
    write_table(rows, folder / "noc_table")               # .md, .csv, .json
    plot_miou_curves(rows, folder / "miou_vs_clicks.png")  # isegm.utils.vis

Every sample runs all `n_clicks` clicks (tau_stop = 1.01, protocol rule 15), so one pass gives
both the NoC numbers (the first click reaching each threshold, identical to an early-stopped
run) and the exact mIoU@k curve. The loop itself is `isegm.inference.evaluation.evaluate_dataset`.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from isegm.inference.evaluation import PRED_THRESHOLD, evaluate_dataset
from isegm.inference.results import write_records
from isegm.inference.utils import (NO_EARLY_STOP_IOU, get_iou, mean_iou_per_click,
                                   summarize_ious)
from isegm.utils.vis import draw_prediction

NOC_THRESHOLDS = (0.80, 0.85, 0.90)
MIOU_CLICKS = (1, 3, 5)
TABLE_METRICS = ("NoC@85", "NoC@90", "NoF@90", "mIoU@1", "mIoU@3", "mIoU@5")
VIS_CLICKS = (1, 3, 5)


@dataclass
class NocResult:
    """Full IoU series of one predictor on one dataset."""

    label: str
    dataset: str
    all_ious: list[np.ndarray]
    sample_ids: list[str]
    n_clicks: int
    elapsed_s: float
    seed: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def miou_curve(self) -> np.ndarray:
        """mIoU@k for k = 1..n_clicks, float64 (n_clicks,)."""
        return mean_iou_per_click(self.all_ious)

    def metrics(self) -> dict[str, float]:
        """NoC@80/85/90, NoF@85/90, mIoU@1/3/5, samples, seconds per click."""
        out = dict(summarize_ious(self.all_ious, NOC_THRESHOLDS, self.n_clicks))
        out.pop("NoF@80", None)
        curve = self.miou_curve()
        for k in MIOU_CLICKS:
            if k <= len(curve):
                out[f"mIoU@{k}"] = float(curve[k - 1])
        clicks = sum(len(x) for x in self.all_ious)
        out["s_per_click"] = self.elapsed_s / max(clicks, 1)
        return out


def evaluate_noc(predictor, dataset, label: str, n_clicks: int = 20,
                 max_samples: Optional[int] = None, vis_dir: Optional[Path] = None,
                 num_vis: int = 0, seed: Optional[int] = None) -> NocResult:
    """Run the NoC protocol (all `n_clicks` clicks) on the first `max_samples` samples.

    With `vis_dir` and `num_vis > 0`, writes `<vis_dir>/<dataset>_<label>_<sample>.png` for the
    first `num_vis` samples: the prediction after clicks 1, 3, 5 and the last click, each with its
    clicks (green positive, red negative), the ground-truth contour (yellow) and its IoU.
    """
    if n_clicks < 1:
        raise ValueError(f"n_clicks must be >= 1, got {n_clicks}")
    count = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    if count == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', dataset)} has no samples to evaluate")
    name = getattr(dataset, "name", type(dataset).__name__)
    callback = None
    if vis_dir is not None and num_vis > 0:
        callback = _PanelCollector(Path(vis_dir), f"{name}_{_slug(label)}",
                                   tuple(sorted({k for k in VIS_CLICKS if k < n_clicks} | {n_clicks})),
                                   num_vis)
    stats: dict[str, Any] = {}
    all_ious, elapsed = evaluate_dataset(dataset, predictor, indices=range(count),
                                         callback=callback, stats=stats,
                                         max_iou_thr=NO_EARLY_STOP_IOU, max_clicks=n_clicks)
    return NocResult(label=label, dataset=name, all_ious=all_ious,
                     sample_ids=[str(s) for s in stats.get("sample_ids", [])], n_clicks=n_clicks,
                     elapsed_s=elapsed, seed=seed)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class _PanelCollector:
    """Evaluation callback: keeps the panels of the first samples and writes one PNG each."""

    def __init__(self, folder: Path, prefix: str, clicks: Sequence[int], num_samples: int):
        self.folder, self.prefix, self.clicks = folder, prefix, tuple(clicks)
        self.num_samples = num_samples
        self.samples: list[Any] = []
        self.panels: list[np.ndarray] = []
        self.paths: list[Path] = []

    def __call__(self, image, gt_mask, probs, sample_id, click_indx, clicks) -> None:
        if sample_id not in self.samples:
            if len(self.samples) >= self.num_samples:
                return
            self.samples.append(sample_id)
            self.panels = []
        if sample_id != self.samples[-1] or (click_indx + 1) not in self.clicks:
            return
        panel = draw_prediction(image, probs, clicks, PRED_THRESHOLD, gt_mask)
        iou = get_iou(gt_mask, probs > PRED_THRESHOLD)
        scale = max(1.0, 160.0 / panel.shape[0])
        if scale > 1.0:
            panel = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        cv2.putText(panel, f"{click_indx + 1} click{'s' if click_indx else ''} IoU {iou:.2f}",
                    (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        self.panels.append(panel)
        if click_indx + 1 == self.clicks[-1]:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.prefix}_{_slug(str(sample_id))}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(self.panels, axis=1),
                                                cv2.COLOR_RGB2BGR))
            self.paths.append(path)


def save_results(results: Sequence[NocResult], path: Path) -> Path:
    """Write the full IoU series of `results` as JSON (float32 values written exactly), so that
    comparisons from several folders can be merged and re-aggregated over seeds later."""
    data = [{"label": r.label, "dataset": r.dataset, "seed": r.seed, "n_clicks": r.n_clicks,
             "elapsed_s": r.elapsed_s, "sample_ids": list(r.sample_ids),
             "ious": [[float(v) for v in np.asarray(x, dtype=np.float32)] for x in r.all_ious]}
            for r in results]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)
    return path


def load_results(path: Path) -> list[NocResult]:
    """Read what `save_results` wrote (a clear error naming the file if it is not that)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [NocResult(label=d["label"], dataset=d["dataset"], seed=d["seed"],
                          n_clicks=int(d["n_clicks"]), elapsed_s=float(d["elapsed_s"]),
                          sample_ids=list(d["sample_ids"]),
                          all_ious=[np.asarray(x, dtype=np.float32) for x in d["ious"]])
                for d in data]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a results file written by save_results ({e})") from e


# ------------------------------------------------------------------------------------------------
def aggregate(results: Sequence[NocResult]) -> list[dict[str, Any]]:
    """One row per (label, dataset), in first-seen order: the mean of every metric over the
    results (seeds) as '<metric>', its standard deviation (ddof 0) as '<metric>_std', the seeds,
    and the mean/std mIoU curves as 'mIoU_curve' / 'mIoU_curve_std' (lists)."""
    groups: "OrderedDict[tuple[str, str], list[NocResult]]" = OrderedDict()
    for r in results:
        groups.setdefault((r.label, r.dataset), []).append(r)
    rows = []
    for (label, dataset), group in groups.items():
        per_seed = [r.metrics() for r in group]
        row: dict[str, Any] = {"model": label, "dataset": dataset, "seeds": len(group),
                               "seed_values": [r.seed for r in group],
                               "num_samples": int(per_seed[0]["num_samples"])}
        for key in per_seed[0]:
            if key == "num_samples":
                continue
            values = np.array([m[key] for m in per_seed], dtype=np.float64)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std())
        length = min(len(r.miou_curve()) for r in group)
        curves = np.stack([r.miou_curve()[:length] for r in group])
        row["mIoU_curve"] = [round(float(v), 6) for v in curves.mean(0)]
        row["mIoU_curve_std"] = [round(float(v), 6) for v in curves.std(0)]
        rows.append(row)
    return rows


def paired_comparison(results: Sequence[NocResult], reference: str,
                      thresholds: Sequence[float] = (0.85, 0.90), resamples: int = 10_000,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Every other label against `reference`, object by object, per dataset and threshold.

    Per object, NoC is averaged over a label's seeds; 'delta' is the mean over objects of
    (label - reference) with a 95% percentile bootstrap interval over objects (`resamples`
    resamples, generator `seed`), 'worse' / 'better' count the objects where the label needs
    more / fewer clicks. 'seed_deltas' are the differences of the per-seed mean NoC for the
    seeds both labels have (the spread between training runs). Objects are matched by sample
    id; a label evaluated on other objects is an error.
    """
    groups = _by_label(results)
    rng = np.random.default_rng(seed)
    rows = []
    for (label, dataset), group in groups.items():
        base = groups.get((reference, dataset))
        if label == reference or base is None:
            continue
        ids = list(base[0].sample_ids)
        for r in base + group:
            if list(r.sample_ids) != ids:
                raise ValueError(f"{r.label} (seed {r.seed}) on {dataset} was evaluated on other "
                                 f"objects than {reference}: cannot pair them")
        for thr in thresholds:
            ref, other = _noc_matrix(base, thr), _noc_matrix(group, thr)
            diff = other.mean(0) - ref.mean(0)
            picks = rng.integers(0, len(diff), (resamples, len(diff)))
            boot = diff[picks].mean(1)
            ref_seeds = {r.seed: m for r, m in zip(base, ref.mean(1))}
            rows.append({
                "model": label, "reference": reference, "dataset": dataset,
                "threshold": thr, "objects": len(diff), "seeds": len(group),
                "delta": float(diff.mean()),
                "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                "worse": int((diff > 0).sum()), "better": int((diff < 0).sum()),
                "seed_deltas": {str(r.seed): float(m - ref_seeds[r.seed])
                                for r, m in zip(group, other.mean(1)) if r.seed in ref_seeds}})
    return rows


def _by_label(results: Sequence[NocResult]) -> "OrderedDict[tuple[str, str], list[NocResult]]":
    groups: "OrderedDict[tuple[str, str], list[NocResult]]" = OrderedDict()
    for r in results:
        groups.setdefault((r.label, r.dataset), []).append(r)
    return groups


def _noc_matrix(results: Sequence[NocResult], thr: float) -> np.ndarray:
    """NoC at `thr` of every object, (seeds, objects) float64."""
    from isegm.inference.utils import sample_noc
    return np.array([[sample_noc(x, thr, r.n_clicks) for x in r.all_ious] for r in results],
                    dtype=np.float64)


def find_factorial_designs(labels: Sequence[str]) -> list[tuple[str, str, str]]:
    """2x2 ablations among `labels`, found by name: (base, x, y) wherever base, base_x, base_y
    and base_x_y are all labels (e.g. the CPU study's `..._noiga`, `..._nolrr` and
    `..._noiga_nolrr` around the full config). A label may repeat (one table row per
    dataset); each design is listed once."""
    labels = list(dict.fromkeys(labels))
    present = set(labels)
    designs = []
    for base in labels:
        suffixes = [label[len(base) + 1:] for label in labels if label.startswith(base + "_")]
        for x in suffixes:
            for y in suffixes:
                if x != y and f"{base}_{x}_{y}" in present:
                    designs.append((base, x, y))
    return designs


def factorial_effects(results: Sequence[NocResult], base: str, x: str, y: str,
                      thresholds: Sequence[float] = (0.85, 0.90), resamples: int = 10_000,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Effects of two changes (typically: removing a component) in a 2x2 ablation, in NoC
    (positive: the change costs clicks, i.e. the removed component helps), per dataset and
    threshold.

    Labels: `base`, `base_x` (change x), `base_y`, `base_x_y` (both). Per object, NoC is
    averaged over each label's seeds; the main effect of x is the mean of its two simple
    effects (alone: base_x - base; on top of y: base_x_y - base_y), and the interaction is
    their difference (base_x_y - base_y) - (base_x - base). Two 95% percentile bootstrap
    intervals: over objects (which images), and over objects and seeds (each label's training
    runs resampled too: the spread between runs is part of the uncertainty of an effect).
    """
    groups = _by_label(results)
    names = {"full": base, "x": f"{base}_{x}", "y": f"{base}_{y}", "xy": f"{base}_{x}_{y}"}
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in OrderedDict((d, None) for (_, d) in groups):
        members = {k: groups.get((label, dataset)) for k, label in names.items()}
        if any(m is None for m in members.values()):
            continue
        ids = list(members["full"][0].sample_ids)
        for k, group in members.items():
            for r in group:
                if list(r.sample_ids) != ids:
                    raise ValueError(f"{r.label} (seed {r.seed}) on {dataset} was evaluated on "
                                     f"other objects than {base}: cannot pair them")
        for thr in thresholds:
            noc = {k: _noc_matrix(group, thr) for k, group in members.items()}
            objects = len(ids)
            obj_picks = rng.integers(0, objects, (resamples, objects))
            # per resample and label: seeds drawn with replacement, then averaged per object
            boot_means = {}
            for k, m in noc.items():
                seed_picks = rng.integers(0, m.shape[0], (resamples, m.shape[0]))
                per_object = m[seed_picks].mean(1)  # (resamples, objects)
                boot_means[k] = np.take_along_axis(per_object, obj_picks, 1).mean(1)
            means = {k: m.mean(0) for k, m in noc.items()}  # per object
            obj_boot = {k: v[obj_picks].mean(1) for k, v in means.items()}
            contrasts = {
                f"_{x} (main effect)":
                    lambda d: 0.5 * ((d["x"] - d["full"]) + (d["xy"] - d["y"])),
                f"_{x} alone (against the base)": lambda d: d["x"] - d["full"],
                f"_{x} on top of _{y}": lambda d: d["xy"] - d["y"],
                f"_{y} (main effect)":
                    lambda d: 0.5 * ((d["y"] - d["full"]) + (d["xy"] - d["x"])),
                f"_{y} alone (against the base)": lambda d: d["y"] - d["full"],
                f"_{y} on top of _{x}": lambda d: d["xy"] - d["x"],
                f"interaction _{x} x _{y}": lambda d: (d["xy"] - d["y"]) - (d["x"] - d["full"]),
            }
            for effect, contrast in contrasts.items():
                per_object = contrast(means)
                by_objects = contrast(obj_boot)
                by_both = contrast(boot_means)
                rows.append({
                    "effect": effect, "base": base, "dataset": dataset, "threshold": thr,
                    "objects": objects, "seeds": {k: int(m.shape[0]) for k, m in noc.items()},
                    "delta": float(per_object.mean()),
                    "ci95_objects": [float(np.percentile(by_objects, 2.5)),
                                     float(np.percentile(by_objects, 97.5))],
                    "ci95_objects_seeds": [float(np.percentile(by_both, 2.5)),
                                           float(np.percentile(by_both, 97.5))]})
    return rows


def factorial_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """`factorial_effects` rows as a markdown table."""
    lines = ["| Change to the base (Δ NoC; + = the change costs clicks) | Dataset | NoC@ "
             "| Δ NoC | 95% CI (objects) | 95% CI (objects and seeds) |",
             "|---|---|---:|---:|---|---|"]
    for r in rows:
        a, b = r["ci95_objects"], r["ci95_objects_seeds"]
        lines.append(f"| {r['effect']} | {r['dataset']} | {round(100 * r['threshold'])} | "
                     f"{r['delta']:+.2f} | [{a[0]:+.2f}, {a[1]:+.2f}] | "
                     f"[{b[0]:+.2f}, {b[1]:+.2f}] |")
    return "\n".join(lines)


def paired_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """`paired_comparison` rows as a markdown table."""
    lines = ["| Model | Dataset | NoC@ | Δ NoC vs " + (rows[0]["reference"] if rows else "reference")
             + " | 95% CI (objects) | more clicks on | fewer on | Δ per seed |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        seeds = ", ".join(f"{s}: {d:+.2f}" for s, d in r["seed_deltas"].items()) or "-"
        lines.append(f"| {r['model']} | {r['dataset']} | {round(100 * r['threshold'])} | "
                     f"{r['delta']:+.2f} | [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | "
                     f"{r['worse']} | {r['better']} | {seeds} |")
    return "\n".join(lines)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    digits = 3 if key.startswith("mIoU") else 2
    if key.startswith("NoF"):
        digits = 1 if row.get("seeds", 1) > 1 else 0
    text = f"{value:.{digits}f}"
    if row.get("seeds", 1) > 1 and f"{key}_std" in row:
        text += f" ± {row[f'{key}_std']:.{digits if digits else 1}f}"
    return text


def markdown_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown table: model, dataset, samples, seeds, metrics (mean ± std over seeds)."""
    header = ["Model", "Dataset", "Samples", "Seeds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(metrics)) + "|"]
    for r in rows:
        cells = [str(r["model"]), str(r["dataset"]), str(r["num_samples"]), str(r["seeds"])]
        cells += [_cell(r, m) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(rows: Sequence[dict[str, Any]], stem: Path, title: str = "",
                metrics: Sequence[str] = TABLE_METRICS) -> dict[str, Path]:
    """Write `<stem>.md` (markdown table), `<stem>.csv` (means and stds, one row per model and
    dataset) and `<stem>.json` (rows with curves); returns {'md', 'csv', 'json'} -> path."""
    scalar_keys = ["model", "dataset", "num_samples", "seeds"]
    for key in ("NoC@80", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "mIoU@1", "mIoU@3", "mIoU@5",
                "s_per_click"):
        if any(key in r for r in rows):
            scalar_keys += [key, f"{key}_std"]
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, metrics) + "\n"
    paths = write_records(Path(stem), rows, scalar_keys, text, text_suffix=".md", csv_digits=6)
    paths["md"] = paths.pop("text")
    return paths


def build_eval_dataset(name: str, paths, synthetic_size: tuple[int, int] = (128, 128),
                       synthetic_samples: int = 100, synthetic_seed: int = 1):
    """An evaluation dataset by registry name. 'Synthetic' is the held-out val split (one object
    per image) at `synthetic_size` with generator seed `synthetic_seed` (1: disjoint from the
    training split and from the trainer's validation images, which use seed 0); other names
    resolve their root through configs.yml (ConfigPathError naming the key if absent)."""
    from isegm.data.datasets import get_dataset
    if name == "Synthetic":
        return get_dataset("Synthetic", paths, image_size=tuple(synthetic_size),
                           num_samples=synthetic_samples, seed=synthetic_seed)
    return get_dataset(name, paths)
