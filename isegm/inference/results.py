"""Writing and reading evaluation results (the evaluator's and the jobs' one writer).

- `write_records(stem, records, fields, text)`: `<stem>.csv` (the `fields` columns), `<stem>.json`
  (the records) and a text table (`<stem>.txt` or `.md`); each file replaced atomically; with
  `append`, the text, the CSV rows and the JSON list grow instead.
- `results_table(rows, n_clicks, extra_thr)`: RITM's NoC table (the evaluator's `.txt`).
- `save_ious` / `load_ious`: per-sample IoU series (NaN-padded `.npz`).
- `write_text_atomic(path, text)`: one text file, replaced atomically.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..utils.log import logger
from ..utils.serialization import atomic_write


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file renamed over it."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_records(stem: Path, records: Sequence[Dict[str, Any]], fields: Sequence[str],
                  text: str, text_suffix: str = ".txt", append: bool = False,
                  csv_digits: Optional[int] = None) -> Dict[str, Path]:
    """Write `records` as `<stem>.csv` (columns `fields`, others left out; floats rounded to
    `csv_digits` if given), `<stem>.json` (the records, whole) and `text` as
    `<stem><text_suffix>`. With `append`, `text` is added to the text file, the rows to the CSV
    (its header written only when new) and the records to the JSON list (a file that is not
    valid JSON is replaced, with a warning). Returns {'text', 'csv', 'json'} -> path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"text": stem.with_suffix(text_suffix), "csv": stem.with_suffix(".csv"),
             "json": stem.with_suffix(".json")}
    old_text = paths["text"].read_text(encoding="utf-8") if append and paths["text"].exists() \
        else ""
    write_text_atomic(paths["text"], old_text + text)

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore",
                            lineterminator="\n")
    new_csv = not (append and paths["csv"].exists())
    if new_csv:
        writer.writeheader()
    for record in records:
        writer.writerow({k: (round(v, csv_digits) if csv_digits is not None
                             and isinstance(v, float) else v) for k, v in record.items()})
    old_csv = "" if new_csv else paths["csv"].read_text(encoding="utf-8")
    write_text_atomic(paths["csv"], old_csv + buffer.getvalue())

    existing: List[Dict[str, Any]] = []
    if append and paths["json"].exists():
        try:
            existing = json.loads(paths["json"].read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s is not valid JSON; starting a new list", paths["json"])
    write_text_atomic(paths["json"], json.dumps(existing + list(records), indent=2, default=str))
    return paths


def results_table(rows: List[Dict[str, Any]], n_clicks: int, extra_thr: Optional[str]) -> str:
    """RITM-style table: NoC@80/85/90, >=N@85/90, SPC, time (plus NoC@target if unusual)."""
    cols = [("Predictor", 13), ("Dataset", 11), ("NoC@80%", 9), ("NoC@85%", 9), ("NoC@90%", 9)]
    if extra_thr:
        cols.append((f"NoC@{extra_thr}%", 9))
    cols += [(f">={n_clicks}@85%", 9), (f">={n_clicks}@90%", 9), ("SPC,s", 7), ("Time", 9)]
    header = "|" + "|".join(f"{name:^{w}}" for name, w in cols) + "|"
    lines = ["-" * len(header), header, "-" * len(header)]

    def fmt(value: Any, width: int, digits: int = 2) -> str:
        if value is None:
            return f"{'-':^{width}}"
        if isinstance(value, float):
            return f"{value:^{width}.{digits}f}"
        return f"{value:^{width}}"

    for r in rows:
        cells = [fmt(r["predictor"], 13), fmt(r["dataset"], 11), fmt(r.get("NoC@80"), 9),
                 fmt(r.get("NoC@85"), 9), fmt(r.get("NoC@90"), 9)]
        if extra_thr:
            cells.append(fmt(r.get(f"NoC@{extra_thr}"), 9))
        spent = time.strftime("%H:%M:%S", time.gmtime(r["time_s"]))
        cells += [fmt(r.get("NoF@85"), 9), fmt(r.get("NoF@90"), 9), fmt(r["spc_s"], 7, 3),
                  fmt(spent, 9)]
        lines.append("|" + "|".join(cells) + "|")
    lines.append("-" * len(header))
    return "\n".join(lines)


def save_ious(path: Path, all_ious: List[np.ndarray], sample_ids: List[Any],
              meta: Dict[str, Any], n_clicks: int,
              series: Optional[Dict[str, List[np.ndarray]]] = None,
              init_iou: Optional[Sequence[float]] = None) -> None:
    """Write IoU series (one (K_i,) array per sample) as a NaN-padded (samples, n_clicks)
    float32 array with their lengths, sample ids and `meta` (JSON) to an `.npz`; `series`: more
    per-click series of the same lengths (e.g. 'biou', 'assd'), padded the same way;
    `init_iou`: the IoU of each sample's initial mask (mask correction)."""
    def padded(arrays: List[np.ndarray]) -> np.ndarray:
        out = np.full((len(all_ious), n_clicks), np.nan, dtype=np.float32)
        for i, values in enumerate(arrays):
            out[i, :len(values)] = values
        return out

    extra = {name: padded(arrays) for name, arrays in (series or {}).items()}
    if init_iou is not None:
        extra["init_iou"] = np.asarray(init_iou, dtype=np.float32)
    atomic_write(path, lambda f: np.savez_compressed(
        f, ious=padded(all_ious), lengths=np.array([len(x) for x in all_ious], dtype=np.int64),
        sample_ids=np.array([str(s) for s in sample_ids]), meta=np.array(json.dumps(meta)),
        **extra))


def load_ious(path: str | os.PathLike) -> Dict[str, Any]:
    """Read an IoU file written by `save_ious`: {'all_ious': [float32 arrays], 'sample_ids',
    'meta' (dict)}, plus 'all_biou' / 'all_assd' (lists like 'all_ious') and 'init_iou' where
    the file holds them."""
    with np.load(path, allow_pickle=False) as data:
        lengths = data["lengths"]
        out = {"all_ious": [data["ious"][i, :n] for i, n in enumerate(lengths)],
               "sample_ids": [str(s) for s in data["sample_ids"]],
               "meta": json.loads(str(data["meta"]))}
        for name in ("biou", "assd"):
            if name in data.files:
                out[f"all_{name}"] = [data[name][i, :n] for i, n in enumerate(lengths)]
        if "init_iou" in data.files:
            out["init_iou"] = data["init_iou"].tolist()
        return out
