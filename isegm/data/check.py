"""Check the configured datasets before training or evaluation: present, readable, complete.

    python scripts/check_datasets.py                              # every dataset of configs.yml
    python scripts/check_datasets.py --datasets=GrabCut,COCO_MVal --config=configs.yml

    from isegm.data.check import check_datasets
    results = check_datasets(load_config(), ["GrabCut"])   # [CheckResult(status='ok', count=50)]

Each dataset is built through the registry (`isegm.data.datasets.get_dataset`) exactly as
evaluation (or, for the training sets, training) builds it, so the count is the number of samples
those would see: instances for the evaluation sets, images for the training sets. Its first sample
is then read, so a root that exists but holds unreadable files fails here too.

Status of one check: 'ok' (count equals the published one), 'subset' (a known partial copy, e.g.
the 400-image COCO_MVal subset: usable, but its NoC is not comparable with published numbers),
'counted' (no published count to compare with: COCO+LVIS), 'miscounted', 'missing' (the
configured path does not exist, or a file the loader needs is absent) or 'unreadable'.
`exit_code` turns results into the script's exit status: 0 when every check is 'ok', 'subset' or
'counted', 1 otherwise.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from isegm.data.io import DatasetError
from isegm.utils.config import Config, ConfigError, ConfigPathError


@dataclass(frozen=True)
class DatasetSpec:
    """One check: a registry name built with `kwargs`, and the sample count it should give."""
    label: str
    registry_name: str
    config_key: str
    unit: str
    expected: Optional[int] = None
    for_training: bool = False
    kwargs: Optional[Dict[str, Any]] = None
    subsets: Optional[Dict[int, str]] = None   # count -> what that partial copy is


# Published sample counts (evaluation protocol rule 39; SBD's train list has 8,498 images).
DATASET_SPECS: Dict[str, List[DatasetSpec]] = {
    "GrabCut": [DatasetSpec("GrabCut", "GrabCut", "GRABCUT_PATH", "instances", 50)],
    "Berkeley": [DatasetSpec("Berkeley", "Berkeley", "BERKELEY_PATH", "instances", 100)],
    "DAVIS": [DatasetSpec("DAVIS", "DAVIS", "DAVIS_PATH", "instances", 345)],
    "SBD": [DatasetSpec("SBD (val)", "SBD", "SBD_PATH", "instances", 6671)],
    "PascalVOC": [DatasetSpec("PascalVOC (val)", "PascalVOC", "PASCALVOC_PATH", "instances", 3417)],
    "COCO_MVal": [DatasetSpec("COCO_MVal", "COCO_MVal", "COCO_MVAL_PATH", "instances", 800,
                              subsets={400: "the 5-per-category subset; its NoC is not "
                                            "comparable with published numbers"})],
    "SBD_Train": [DatasetSpec("SBD_Train (train)", "SBD_Train", "SBD_PATH", "images", 8498,
                              for_training=True)],
    "COCO_LVIS": [DatasetSpec("COCO_LVIS (train)", "COCO_LVIS", "LVIS_v1_PATH", "images",
                              for_training=True, kwargs={"split": "train"}),
                  DatasetSpec("COCO_LVIS (val)", "COCO_LVIS", "LVIS_v1_PATH", "images",
                              for_training=True, kwargs={"split": "val"})],
}
EVALUATION_SETS = ("GrabCut", "Berkeley", "DAVIS", "SBD", "PascalVOC", "COCO_MVal")
TRAINING_SETS = ("SBD_Train", "COCO_LVIS")
OK_STATUSES = ("ok", "subset", "counted")


@dataclass(frozen=True)
class CheckResult:
    spec: DatasetSpec
    status: str
    count: Optional[int] = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def line(self) -> str:
        """One line for the report, e.g. 'ok          GrabCut  50 instances (expected 50)'."""
        s = self.spec
        if self.count is None:
            what = self.detail
        else:
            expected = f"expected {s.expected}" if s.expected is not None else "no published count"
            what = f"{self.count} {s.unit} ({expected})" + (f": {self.detail}" if self.detail else "")
        return f"{self.status.upper():<11} {s.label:<18} {what}"


def check_one(cfg: Config, spec: DatasetSpec) -> CheckResult:
    """Build `spec`'s dataset from `cfg`, count its samples and read the first one."""
    from isegm.data.datasets import get_dataset  # deferred: the loaders import OpenCV
    try:
        dataset = get_dataset(spec.registry_name, cfg, for_training=spec.for_training,
                              **(spec.kwargs or {}))
    except (ConfigPathError, ConfigError) as e:  # the message names key, path and layout
        return CheckResult(spec, "missing", detail=str(e))
    except DatasetError as e:  # the root exists, a file or folder the loader needs does not
        status = "missing" if "does not exist" in str(e) else "unreadable"
        return CheckResult(spec, status, detail=f"under {spec.config_key}: {e}")
    count = len(dataset.dataset_samples)
    try:
        if count:
            dataset.get_sample(0)
    except DatasetError as e:
        return CheckResult(spec, "unreadable", count,
                           detail=f"under {spec.config_key}, first sample: {e}")
    if spec.expected is None:
        return CheckResult(spec, "counted", count)
    if count == spec.expected:
        return CheckResult(spec, "ok", count)
    if spec.subsets and count in spec.subsets:
        return CheckResult(spec, "subset", count, detail=spec.subsets[count])
    return CheckResult(spec, "miscounted", count,
                       detail=f"{count - spec.expected:+d}; a partial download or another split?")


def check_datasets(cfg: Config, names: Sequence[str]) -> List[CheckResult]:
    """Check each dataset in `names` (keys of `DATASET_SPECS`), in order."""
    unknown = [n for n in names if n not in DATASET_SPECS]
    if unknown:
        raise KeyError(f"unknown dataset(s) {', '.join(unknown)}; known: "
                       f"{', '.join(DATASET_SPECS)}")
    return [check_one(cfg, spec) for name in names for spec in DATASET_SPECS[name]]


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when every result is ok / subset / counted, 1 when any is missing, miscounted or
    unreadable."""
    return 0 if all(r.ok for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="check_datasets.py",
        description="Check that the datasets configured in configs.yml exist, are readable and "
                    "hold the published number of samples. Exit status: 0 when every checked "
                    "dataset is complete (or a known subset, or has no published count), 1 when "
                    "any is missing, unreadable or miscounted, 2 for a bad argument or config.")
    p.add_argument("--datasets", type=str, default=",".join(DATASET_SPECS),
                   help=f"comma-separated, from: {', '.join(DATASET_SPECS)} (default: all); "
                        f"'eval' and 'train' stand for {'/'.join(EVALUATION_SETS)} and "
                        f"{'/'.join(TRAINING_SETS)}")
    p.add_argument("--config", type=str, default=None, help="another configs.yml")
    return p


def parse_names(value: str) -> List[str]:
    """Dataset names of a --datasets value ('eval' / 'train' expand to their groups)."""
    names: List[str] = []
    for item in (v.strip() for v in value.split(",")):
        group = {"eval": EVALUATION_SETS, "train": TRAINING_SETS}.get(item, (item,) if item else ())
        names += [g for g in group if g not in names]
    return names
