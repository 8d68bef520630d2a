"""The CUDA code path checked on the CPU (issue 16): mixed-precision steps with a non-finite loss
are skipped and counted, every parameter of every reference model takes part in the loss (so
DDP runs with find_unused_parameters=False), and the installed torch has every API the code
uses (the minimum stated in requirements.txt and pyproject.toml)."""
import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from isegm.engine import recipe
from isegm.engine import trainer as trainer_module
from isegm.engine.distributed import DistInfo
from isegm.engine.experiment import ExperimentPaths
from isegm.engine.launch import load_config_module
from isegm.engine.losses import LossSpec
from isegm.engine.runconfig import RunConfig
from isegm.utils.config import load_config
from tests.test_train_configs.fixed_data import FixedDataset, fixed_focus_boxes

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MODULES = sorted((REPO / "models").glob("*/*.py"))

# The first torch release that has each API the code calls (release notes of 2.2, 2.3, 2.4).
TORCH_FEATURES = {
    "torch.nn.Module.compile (isegm/inference/predictors/iglr.py)": (2, 2),
    "torch.amp.GradScaler(device_type) (isegm/engine/trainer.py)": (2, 3),
    "init_process_group(device_id=...) (isegm/engine/distributed.py)": (2, 3),
    "torch.is_autocast_enabled(device_type) (isegm/model/heads.py)": (2, 4),
}
TORCH_MINIMUM = max(TORCH_FEATURES.values())


def _version(text: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def _cfg(tmp_path) -> RunConfig:
    paths = ExperimentPaths.at(tmp_path / "exp")
    paths.make_dirs()
    return RunConfig(config_path=REPO / "tests" / "test_train_configs" / "tiny_fixed.py",
                     paths=load_config(), batch_size=2, workers=0, cpu=True, dist=DistInfo(),
                     exp=paths)


TINY = recipe.SYNTHETIC_CPU.replace(crop_size=(48, 48), num_max_points=4, batch_size=2,
                                    model_kwargs={"refine_size": 16, "drop_path_rate": 0.0},
                                    milestones=(), image_dump_interval=0, log_interval=1,
                                    max_num_next_clicks=0)


class Scaled(nn.Module):
    """A loss term `factor * mean(logits)`: factor inf makes loss and gradients non-finite,
    as an fp16 overflow does."""

    def __init__(self):
        super().__init__()
        self.factor = 1e-3

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.float().mean() * self.factor


def _amp_trainer(tmp_path, amp: bool):
    cfg = _cfg(tmp_path)
    model, model_cfg = recipe.init_model(cfg, TINY)
    data = FixedDataset(4, size=48)
    trainer = recipe.make_trainer(model, cfg, model_cfg, TINY, data, None,
                                  focus_sampler=fixed_focus_boxes)
    poison = Scaled()
    trainer.loss_cfg = trainer.loss_cfg + [LossSpec("poison", 1.0, poison, "instances", "instances")]
    # The CUDA setting (use_amp on a GPU) uses an enabled GradScaler; on the CPU it is the same
    # scaler logic (found-inf check, skipped optimizer step, scale backoff).
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, enabled=amp)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    return trainer, poison, batch


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.net_module.state_dict().items()
            if v.dtype.is_floating_point and "running" not in k}


def test_amp_skips_non_finite_steps_and_raises_only_after_many_in_a_row(tmp_path, monkeypatch):
    trainer, poison, batch = _amp_trainer(tmp_path, amp=True)
    before = _weights(trainer)
    poison.factor = float("inf")
    for _ in range(3):
        loss, _, _, _ = trainer.train_step(batch)     # no FloatingPointError: GradScaler skips
        assert not torch.isfinite(loss)
    trainer._check_nonfinite_run()                    # 3 < MAX_CONSECUTIVE_NONFINITE_STEPS
    after = _weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step moved weights"
    assert trainer.skipped_steps_total() == 3
    assert trainer.scaler.get_scale() == 2.0 ** 7     # halved once per skipped step
    poison.factor = 1e-3
    trainer.train_step(batch)                         # a finite step updates and resets the run
    assert any(not torch.equal(before[k], v) for k, v in _weights(trainer).items())
    assert int(trainer._nonfinite_run) == 0 and trainer.skipped_steps_total() == 3
    # Many in a row: the epoch loop stops at the check after the limit (log_interval=1).
    monkeypatch.setattr(trainer_module, "MAX_CONSECUTIVE_NONFINITE_STEPS", 2)
    poison.factor = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite in the last 2 steps in a row .*"
                                                 r"MAX_CONSECUTIVE_NONFINITE_STEPS=2"):
        trainer.training(0)
    assert trainer_module.MAX_CONSECUTIVE_NONFINITE_STEPS == 2
    monkeypatch.undo()
    assert trainer_module.MAX_CONSECUTIVE_NONFINITE_STEPS >= 10


def test_without_amp_a_non_finite_loss_stops_at_once(tmp_path):
    trainer, poison, batch = _amp_trainer(tmp_path, amp=False)
    before = _weights(trainer)
    poison.factor = float("inf")
    with pytest.raises(FloatingPointError, match=r"loss is (inf|nan) at step 1: .*poison="):
        trainer.train_step(batch)
    assert all(torch.equal(before[k], v) for k, v in _weights(trainer).items())


def _tiny_variants():
    """One tiny B0 variant per distinct model and loss configuration of the reference modules."""
    seen, out = set(), []
    for path in REFERENCE_MODULES:
        rec = load_config_module(path).RECIPE
        tiny = rec.replace(backbone="mit_b0", pretrained=False, crop_size=(48, 48),
                           num_max_points=4, batch_size=2,
                           model_kwargs={**rec.model_kwargs, "refine_size": 16,
                                         "drop_path_rate": 0.0},
                           image_dump_interval=0)
        key = (repr(tiny.model_params()), repr([(s.name, s.weight) for s in recipe.loss_specs(
            tiny, tiny.model_kwargs.get("use_refiner", True))]))
        if key not in seen:
            seen.add(key)
            out.append(pytest.param(tiny, id=f"{path.parent.name}/{path.stem}"))
    return out


@pytest.mark.parametrize("tiny", _tiny_variants())
def test_every_parameter_gets_a_gradient(tiny, tmp_path):
    """DDP runs with find_unused_parameters=False: a parameter outside the loss's graph would
    make its second step fail. Here it would have no gradient after one step."""
    assert inspect.signature(trainer_module.ISTrainer).parameters[
        "find_unused_parameters"].default is False
    cfg = _cfg(tmp_path)
    model, model_cfg = recipe.init_model(cfg, tiny)
    data = FixedDataset(2, size=48)
    trainer = recipe.make_trainer(model, cfg, model_cfg, tiny, data, None)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    trainer.optim.zero_grad(set_to_none=True)
    trainer.train_step(batch)
    params = [(n, p) for n, p in trainer.net_module.named_parameters() if p.requires_grad]
    assert params
    unused = [n for n, p in params if p.grad is None]
    assert not unused, f"parameters outside the loss: {unused[:10]}"


def test_stated_torch_minimum_matches_the_apis_used_and_the_installed_torch():
    requirements = (REPO / "requirements.txt").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    stated = re.search(r"any torch >= (\d+\.\d+)", requirements)
    assert stated and _version(stated.group(1)) == TORCH_MINIMUM, stated
    pinned = re.search(r'"torch>=(\d+\.\d+)"', pyproject)
    assert pinned and _version(pinned.group(1)) == TORCH_MINIMUM, pinned
    assert _version(torch.__version__) >= TORCH_MINIMUM, torch.__version__
    # Each API is there in the installed torch (what the minimum promises).
    assert callable(getattr(nn.Module, "compile", None))
    assert "device" in inspect.signature(torch.amp.GradScaler.__init__).parameters
    from torch.distributed import init_process_group
    assert "device_id" in inspect.signature(init_process_group).parameters
    assert torch.is_autocast_enabled("cpu") is False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") is True
