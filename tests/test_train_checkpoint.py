"""Checkpoint helpers: RNG states round-trip and load with weights_only; BatchNorm conversion."""
import copy
import random

import numpy as np
import torch

from isegm.engine.checkpoint import get_rng_states, read_checkpoint, save_checkpoint, set_rng_states
from isegm.engine.distributed import AllReduceBatchNorm, convert_sync_batchnorm, process_seed


def _draw(gen):
    return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(gen.random()))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    from isegm.model import IGLRModel
    gen = np.random.default_rng(3)
    states = get_rng_states(gen)
    expected = _draw(gen)
    model = IGLRModel(backbone="mit_b0", use_refiner=False)
    save_checkpoint(tmp_path / "c.pth", model, rng_states={0: states}, epoch=2, step=7)
    loaded = torch.load(tmp_path / "c.pth", weights_only=True)  # no pickled numpy objects
    assert loaded["arch"] == "iglr" and loaded["epoch"] == 2
    _draw(gen)
    set_rng_states(read_checkpoint(tmp_path / "c.pth")["rng_states"][0], gen)
    assert _draw(gen) == expected


def test_allreduce_batchnorm_equals_batchnorm_in_one_process():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    x = torch.randn(4, 3, 5, 5)
    plain = copy.deepcopy(net)
    ref = plain(x)
    converted = convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(converted[1], AllReduceBatchNorm)
    assert converted[1].weight is net[1].weight  # same parameters, optimizer unaffected
    torch.testing.assert_close(converted(x), ref)
    torch.testing.assert_close(converted[1].running_mean, plain[1].running_mean)
    converted.eval()
    plain.eval()
    torch.testing.assert_close(converted(x), plain(x))
    assert len({process_seed(0, r, e) for r in range(4) for e in range(4)}) == 16
