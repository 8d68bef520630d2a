"""Predictor registry.

    predictor = get_predictor("iglr", model, device, with_flip=True)
    predictor = get_predictor("cv_grabcut")          # weight-free classical reference

Names: 'iglr' (two-stage), 'coarse' (no refinement; `crop_mode='zoom_in'` for RITM's ZoomIn),
'cv_grabcut' (OpenCV GrabCut seeded by clicks), 'oracle' (returns the ground truth) and
'empty' (returns nothing) for tests. `predictor_for_mode('NoBRS', model)` picks 'iglr' or
'coarse' from the model's `use_refiner`.
"""
from __future__ import annotations

import inspect
from typing import Optional, Union

import torch

from ...utils.registry import Registry
from .base import BasePredictor, clicks_to_points, flip_clicks
from .classical import GrabCutPredictor
from .iglr import CROP_MODES, EMPTY_MASK_ROIS, CoarsePredictor, IGLRPredictor
from .reference import EmptyPredictor, OraclePredictor

PREDICTORS: Registry = Registry("predictor")
PREDICTORS.add("iglr", IGLRPredictor)
PREDICTORS.add("coarse", CoarsePredictor)
PREDICTORS.add("cv_grabcut", GrabCutPredictor)
PREDICTORS.add("oracle", OraclePredictor)
PREDICTORS.add("empty", EmptyPredictor)

# evaluate_model.py modes: 'NoBRS' (the network, one forward per click) or a predictor name.
MODES = ("NoBRS",)


def get_predictor(name: str, model: Optional[torch.nn.Module] = None,
                  device: Union[torch.device, str] = "cpu", **kwargs) -> BasePredictor:
    """Build the predictor registered as `name` (KeyError listing the known names)."""
    """Options that the predictor's constructor does not take (e.g. `focus_crop_r` for the coarse
    predictor) are dropped, so one option set serves every predictor."""
    cls = PREDICTORS.get(name)
    if getattr(cls, "requires_model", False) and model is None:
        raise ValueError(f"predictor '{name}' needs a model checkpoint")
    accepted = inspect.signature(cls.__init__).parameters
    options = {k: v for k, v in kwargs.items() if k in accepted}
    return cls(model if cls.requires_model else None, device, **options)


def predictor_name_for_mode(mode: str, model: Optional[torch.nn.Module] = None) -> str:
    """'NoBRS' -> 'iglr' for models with the refiner, else 'coarse'; predictor names pass."""
    if mode in MODES:
        if model is None:
            raise ValueError(f"mode '{mode}' needs a model checkpoint")
        return "iglr" if getattr(model, "use_refiner", False) else "coarse"
    PREDICTORS.get(mode)  # raises listing the known names
    return mode


__all__ = ["BasePredictor", "CROP_MODES", "CoarsePredictor", "EMPTY_MASK_ROIS", "EmptyPredictor",
           "GrabCutPredictor", "IGLRPredictor", "MODES", "OraclePredictor", "PREDICTORS",
           "clicks_to_points", "flip_clicks", "get_predictor", "predictor_name_for_mode"]
