"""Experiment folders: `EXPS_PATH/<family>/<model>/<NNN>_<exp-name>/`.

    <NNN>_<exp-name>/
        <model>.py          copy of the config module (a numbered copy if a resumed run changed it)
        config.yml          the resolved configuration of the run (one file per (re)start)
        train_log.txt       the log (appended on resume)
        events.out.tfevents.*  tensorboard curves and image dumps
        checkpoints/        NNN.pth (periodic), last_checkpoint.pth, best_checkpoint.pth
        vis/                image dumps as PNG

Nothing is ever deleted or overwritten except the checkpoints `last`/`best` (atomically).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

_NUM_RE = re.compile(r"^(\d{3,})(?:_|$)")


@dataclass
class ExperimentPaths:
    root: Path          # the <NNN>_<name> folder
    checkpoints: Path
    vis: Path
    log_file: Path

    @classmethod
    def at(cls, root: Path) -> "ExperimentPaths":
        root = Path(root)
        return cls(root=root, checkpoints=root / "checkpoints", vis=root / "vis",
                   log_file=root / "train_log.txt")

    def make_dirs(self) -> None:
        for path in (self.root, self.checkpoints, self.vis):
            path.mkdir(parents=True, exist_ok=True)


class ExperimentError(Exception):
    """An experiment folder cannot be created or found."""


def model_exp_dir(exps_path: Path, config_module_path: Path) -> Path:
    """`exps_path/<family>/<model>`: family = folder of the config module, model = its stem."""
    config_module_path = Path(config_module_path)
    return Path(exps_path) / config_module_path.parent.name / config_module_path.stem


def next_exp_dir(model_dir: Path, exp_name: str = "") -> Path:
    """The next free `<NNN>_<exp_name>` folder in `model_dir` (not created)."""
    numbers = [int(m.group(1)) for p in (model_dir.iterdir() if model_dir.is_dir() else [])
               if p.is_dir() and (m := _NUM_RE.match(p.name))]
    number = max(numbers, default=-1) + 1
    name = f"{number:03d}" + (f"_{exp_name}" if exp_name else "")
    return model_dir / name


def create_exp_dir(model_dir: Path, exp_name: str = "") -> ExperimentPaths:
    """Create a new numbered experiment folder; never reuses an existing one."""
    if exp_name and not re.fullmatch(r"[A-Za-z0-9._+-]+", exp_name):
        raise ExperimentError(f"--exp-name '{exp_name}' may hold only letters, digits and . _ + -")
    for _ in range(100):
        root = next_exp_dir(model_dir, exp_name)
        try:
            root.mkdir(parents=True, exist_ok=False)
        except FileExistsError:  # another run took this number meanwhile
            continue
        paths = ExperimentPaths.at(root)
        paths.make_dirs()
        return paths
    raise ExperimentError(f"could not create a new experiment folder in '{model_dir}'")


def find_resume_exp(model_dir: Path, resume_exp: str) -> ExperimentPaths:
    """The experiment folder in `model_dir` whose name starts with `resume_exp` (e.g. '003')."""
    candidates = sorted(p for p in (model_dir.iterdir() if model_dir.is_dir() else [])
                        if p.is_dir() and p.name.startswith(resume_exp))
    if not candidates:
        existing = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        raise ExperimentError(f"--resume-exp '{resume_exp}': no experiment folder in '{model_dir}' "
                              f"starts with it (existing: {existing or 'none'})")
    if len(candidates) > 1:
        raise ExperimentError(f"--resume-exp '{resume_exp}' is ambiguous in '{model_dir}': "
                              f"{[p.name for p in candidates]}")
    return ExperimentPaths.at(candidates[0])


def find_checkpoint(checkpoints_dir: Path, prefix: str = "last") -> Path:
    """The checkpoint `checkpoints_dir/<prefix>*.pth` (e.g. 'last', 'best', '040')."""
    matches = sorted(Path(checkpoints_dir).glob(f"{prefix}*.pth"))
    if not matches:
        existing = sorted(p.name for p in Path(checkpoints_dir).glob("*.pth"))
        raise ExperimentError(f"no checkpoint '{prefix}*.pth' in '{checkpoints_dir}' "
                              f"(existing: {existing or 'none'})")
    if len(matches) > 1:
        raise ExperimentError(f"--resume-prefix '{prefix}' matches several checkpoints in "
                              f"'{checkpoints_dir}': {[p.name for p in matches]}")
    return matches[0]


def _free_name(path: Path) -> Path:
    """`path` if free, else `stem_1.suffix`, `stem_2.suffix`, ..."""
    if not path.exists():
        return path
    k = 1
    while (candidate := path.with_name(f"{path.stem}_{k}{path.suffix}")).exists():
        k += 1
    return candidate


def copy_config_module(paths: ExperimentPaths, module_path: Path) -> Path:
    """Copy the config module into the folder; a changed module on resume gets a numbered copy."""
    module_path = Path(module_path)
    target = paths.root / module_path.name
    if target.exists():
        if target.read_bytes() == module_path.read_bytes():
            return target
        target = _free_name(target)
    shutil.copy2(module_path, target)
    return target


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_resolved_config(paths: ExperimentPaths, config: Mapping[str, Any],
                          name: str = "config.yml") -> Path:
    """Write the resolved configuration as YAML (a numbered file if one exists already)."""
    target = _free_name(paths.root / name)
    with open(target, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(config), f, sort_keys=False, default_flow_style=False)
    return target
