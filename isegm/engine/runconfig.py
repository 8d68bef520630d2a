"""The settings of one training run (command line + configs.yml + where it runs).

`train.py` builds it from its arguments; tests build it directly:

    cfg = RunConfig(config_path=Path("models/iglr_cpu/segformerB0_S2_synthetic.py"),
                    paths=load_config(), batch_size=8, workers=0, cpu=True)

Config modules read `cfg.paths` (configs.yml), `cfg.batch_size` (global), `cfg.epochs`, ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from isegm.engine.distributed import DistInfo
from isegm.engine.experiment import ExperimentPaths
from isegm.utils.config import Config


@dataclass
class RunConfig:
    config_path: Path
    paths: Config
    batch_size: int = 8                  # global batch; each process loads batch_size // world_size
    val_batch_size: Optional[int] = None
    workers: int = 4
    seed: int = 0
    exp_name: str = ""
    epochs: Optional[int] = None         # overrides the config module's number of epochs
    start_epoch: Optional[int] = None    # overrides the epoch to start from
    resume_exp: Optional[str] = None
    resume_prefix: str = "last"
    resume_checkpoint: Optional[Path] = None  # resolved from resume_exp / resume_prefix
    weights: Optional[Path] = None
    trust_checkpoint: bool = False       # --trust-checkpoint: unpickle checkpoints in full
    cpu: bool = False
    gpu_ids: list[int] = field(default_factory=list)
    ngpus: int = 1
    dist: DistInfo = field(default_factory=DistInfo)
    exp: Optional[ExperimentPaths] = None  # set when the experiment folder exists

    @property
    def model_name(self) -> str:
        return Path(self.config_path).stem

    @property
    def device(self):
        return self.dist.device

    @property
    def per_process_batch(self) -> int:
        return self.batch_size // self.dist.world_size

    @property
    def per_process_val_batch(self) -> int:
        return max(1, (self.val_batch_size or self.batch_size) // self.dist.world_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the resolved-configuration file."""
        return {
            "config_module": str(Path(self.config_path).resolve()),
            "configs_yml": self.paths.source, "paths": self.paths.to_dict(),
            "batch_size": self.batch_size, "per_process_batch": self.per_process_batch,
            "val_batch_size": self.val_batch_size, "workers": self.workers, "seed": self.seed,
            "exp_name": self.exp_name, "epochs": self.epochs, "start_epoch": self.start_epoch,
            "resume_exp": self.resume_exp, "resume_prefix": self.resume_prefix,
            "resume_checkpoint": str(self.resume_checkpoint) if self.resume_checkpoint else None,
            "weights": str(self.weights) if self.weights else None,
            "trust_checkpoint": self.trust_checkpoint, "cpu": self.cpu,
            "gpu_ids": list(self.gpu_ids), "world_size": self.dist.world_size,
            "backend": self.dist.backend, "device": str(self.dist.device),
            "exp_path": str(self.exp.root) if self.exp else None,
        }
