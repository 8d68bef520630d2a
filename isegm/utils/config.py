"""Project configuration: `configs.yml` with relative defaults and environment overrides.

    cfg = load_config()                      # ./configs.yml beside the repository root
    cfg = load_config("my_configs.yml")      # another file (`--config` on the command line)
    root = cfg.get_path("GRABCUT_PATH")      # Path, resolved; raises ConfigPathError if missing

Resolution order for a key: environment variable (same name; nested keys joined with `__`,
e.g. `IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0`) > the YAML file. Relative paths are resolved
against the folder that holds the YAML file, so the repository works from any current directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs.yml"

# What a user must find at each configured path; used in error messages.
EXPECTED_LAYOUTS = {
    "GRABCUT_PATH": "data_GT/<name>.{jpg,JPG,bmp} images and boundary_GT/<name>.bmp masks",
    "BERKELEY_PATH": "images/<name>.jpg images and masks/<name>.png masks",
    "DAVIS_PATH": "img/<name>.jpg images and gt/<name>.png masks",
    "COCO_MVAL_PATH": "img/<name>.jpg images and gt/<name>.png masks",
    "DAVIS585_PATH": "one folder per sequence with <name>.jpg, <name>.png, init_stm_<name>.png "
                     "and init_sp_<name>.png",
    "SBD_PATH": "the benchmark's dataset/ folder: img/<id>.jpg, inst/<id>.mat, train.txt, val.txt",
    "PASCALVOC_PATH": "JPEGImages/<id>.jpg, SegmentationObject/<id>.png, "
                      "ImageSets/Segmentation/<split>.txt",
    "LVIS_v1_PATH": "<split>/images/<id>.jpg, <split>/masks/<id>.pickle, "
                    "<split>/hannotation.pickle (RITM's COCO+LVIS format)",
    "IMAGES_DIR_PATH": "images/<stem>.* and masks/<stem>.* or masks/<stem>_<k>.*",
    "INTERACTIVE_MODELS_PATH": "a folder of interactive-segmentation checkpoints (*.pth)",
    "EXPS_PATH": "a writable folder for experiment runs",
}


class ConfigError(Exception):
    """A configuration key is absent or malformed."""


class ConfigPathError(FileNotFoundError):
    """A configured path does not exist where a loader needs it."""


def _env_name(key_path: tuple[str, ...]) -> str:
    return "__".join(key_path)


class Config(Mapping[str, Any]):
    """Read-only view of the merged configuration with attribute access (`cfg.EXPS_PATH`)."""

    def __init__(self, data: Mapping[str, Any], base_dir: Path, source: str,
                 key_path: tuple[str, ...] = ()):
        self._data = dict(data)
        self._base_dir = Path(base_dir)
        self._source = source
        self._key_path = key_path

    # Mapping protocol ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        full = self._key_path + (key,)
        env = os.environ.get(_env_name(full))
        if env is not None and env != "":
            return env
        if key not in self._data:
            raise ConfigError(f"configuration key '{'.'.join(full)}' is not set in {self._source} "
                              f"nor in the environment variable {_env_name(full)}")
        value = self._data[key]
        if isinstance(value, Mapping):
            return Config(value, self._base_dir, self._source, full)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except ConfigError as e:
            raise AttributeError(str(e)) from None

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve(self, key: str) -> Path:
        """The path stored under `key` (dotted for nested keys), resolved; existence not checked."""
        node: Any = self
        parts = key.split(".")
        for part in parts:
            node = node[part]
        path = Path(os.path.expanduser(str(node)))
        if not path.is_absolute():
            path = self._base_dir / path
        return path.resolve()

    def origin(self, key: str) -> str:
        """Where the value of `key` (dotted for nested keys) comes from: 'the environment
        variable NAME' or "'KEY' in FILE"."""
        env = _env_name(self._key_path + tuple(key.split(".")))
        if os.environ.get(env):
            return f"the environment variable {env}"
        return f"'{'.'.join(self._key_path + (key,))}' in {self._source}"

    def from_environment(self, key: str) -> bool:
        """True if an environment variable sets `key` (dotted for nested keys)."""
        return bool(os.environ.get(_env_name(self._key_path + tuple(key.split(".")))))

    def get_path(self, key: str, must_exist: bool = True) -> Path:
        """Resolved path of `key`; raises ConfigPathError naming key, path and layout if absent."""
        path = self.resolve(key)
        if must_exist and not path.exists():
            env = _env_name(self._key_path + tuple(key.split(".")))
            layout = EXPECTED_LAYOUTS.get(key.split(".")[-1], "the file or folder it names")
            raise ConfigPathError(
                f"{key} resolves to '{path}', which does not exist. Expected there: {layout}. "
                f"Set it in {self._source} or with the environment variable {env}.")
        return path

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of resolved values (environment overrides applied)."""
        out: dict[str, Any] = {}
        for key in self._data:
            value = self[key]
            out[key] = value.to_dict() if isinstance(value, Config) else value
        return out


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load `configs.yml` (or `path`); environment variables override individual keys."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigPathError(f"configuration file '{path}' does not exist "
                              f"(expected a YAML file like {DEFAULT_CONFIG_PATH.name} in the repository root)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"configuration file '{path}' is not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration file '{path}' must hold a mapping of keys to values, "
                          f"got {type(data).__name__}")
    return Config(data, path.resolve().parent, str(path))
