"""Precise BN: after every epoch the trainer recomputes the BatchNorm running statistics on
training batches under the epoch's final weights (`ISTrainer.recalibrate_batchnorm`)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from isegm.engine import recipe
from tests.test_train_configs.fixed_data import FixedDataset
from tests.test_train_cuda_safety import TINY, _cfg

RECIPE = TINY.replace(max_num_next_clicks=2, precise_bn_batches=3)


def _trainer(tmp_path, rec=RECIPE):
    torch.manual_seed(0)
    cfg = _cfg(tmp_path)
    model, model_cfg = recipe.init_model(cfg, rec)
    return recipe.make_trainer(model, cfg, model_cfg, rec, FixedDataset(8, size=48), None)


def _norms(trainer):
    return [m for m in trainer.net_module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_statistics_are_the_plain_average_over_the_calibration_batches(tmp_path):
    trainer = _trainer(tmp_path)
    norms = _norms(trainer)
    assert len(norms) >= 3    # the head and the refiner's blocks
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {id(m): [] for m in norms}

    def record(module, args):
        x = args[0].detach().double()
        seen[id(module)].append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)))
    for m in norms:   # stale statistics from "older weights"
        m.running_mean.fill_(50.0)
        m.running_var.fill_(1e-4)
        m.momentum = 0.1
    rng_state = trainer.rng.bit_generator.state
    trainer.net_module.eval()
    # the click rounds of the calibration batches run first, on the stale statistics (eval);
    # the hooks record only the train-mode forwards that accumulate the new statistics
    handles = [m.register_forward_pre_hook(lambda mod, a: record(mod, a) if mod.training
                                           else None) for m in norms]
    try:
        used = trainer.recalibrate_batchnorm(epoch=3)
    finally:
        for h in handles:
            h.remove()
    assert used == 3
    for m in norms:
        means = torch.stack([s[0] for s in seen[id(m)]])
        varis = torch.stack([s[1] for s in seen[id(m)]])
        assert len(means) == 3
        torch.testing.assert_close(m.running_mean.double(), means.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.running_var.double(), varis.mean(0), rtol=1e-4, atol=1e-5)
        assert m.momentum == 0.1 and int(m.num_batches_tracked) == 3
    assert not trainer.net_module.training            # the mode it had before
    assert trainer.rng.bit_generator.state == rng_state   # training's RNG untouched


def test_same_epoch_same_statistics_and_different_epochs_differ(tmp_path):
    """The batches come from (seed, rank, epoch): a resumed run recomputes the same statistics
    (given the same weights and the same statistics for the click rounds)."""
    trainer = _trainer(tmp_path)
    state = {k: v.clone() for k, v in trainer.net_module.state_dict().items()}
    trainer.recalibrate_batchnorm(epoch=1)
    first = [m.running_mean.clone() for m in _norms(trainer)]
    trainer.net_module.load_state_dict(state)
    trainer.recalibrate_batchnorm(epoch=1)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(first, _norms(trainer)))
    trainer.net_module.load_state_dict(state)
    trainer.recalibrate_batchnorm(epoch=2)
    assert any(not torch.equal(a, m.running_mean) for a, m in zip(first, _norms(trainer)))


def test_recalibration_runs_after_each_epoch_before_validation(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    calls = []
    monkeypatch.setattr(trainer, "recalibrate_batchnorm",
                        lambda epoch: calls.append(("bn", epoch)))
    monkeypatch.setattr(trainer, "training", lambda epoch: calls.append(("train", epoch)) or {})
    monkeypatch.setattr(trainer, "save_checkpoints", lambda *a: calls.append(("save", a[0])))
    trainer.run(2, validation=False)
    assert calls == [("train", 0), ("bn", 0), ("save", 0), ("train", 1), ("bn", 1), ("save", 1)]
    off = _trainer(tmp_path / "off", RECIPE.replace(precise_bn_batches=0))
    calls.clear()
    monkeypatch.setattr(off, "recalibrate_batchnorm", lambda epoch: calls.append(("bn", epoch)))
    monkeypatch.setattr(off, "training", lambda epoch: {})
    monkeypatch.setattr(off, "save_checkpoints", lambda *a: None)
    off.run(1, validation=False)
    assert calls == []


def test_every_recipe_recalibrates(tmp_path):
    for rec in (recipe.SBD, recipe.COCO_LVIS, recipe.SYNTHETIC_CPU, recipe.COCO_MVAL_CPU):
        assert rec.precise_bn_batches == 8
    with pytest.raises(ValueError, match="precise_bn_batches must be >= 0, got -1"):
        _trainer(tmp_path, RECIPE.replace(precise_bn_batches=-1))
