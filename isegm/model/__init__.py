"""IGLR model: MiT backbone with Interaction-Guided Attention, SegFormer head, Local Region
Refiner, click encoding, ROI sampling, checkpoints and pretrained MiT loading."""
from .heads import SegFormerHead
from .is_model import IGLRModel, load_is_model, save_is_model, with_autocast_weights
from .layers import IGA_TERMS
from .mit import BACKBONES, MIT_CONFIGS, MixVisionTransformer
from .ops import click_maps, points_to_crop
from .roi_sampling import roi_align
from .pretrained import LoadReport, PretrainedLoadError, convert_mit_state_dict, load_pretrained_mit
from .refiner import LocalRefiner

__all__ = ["BACKBONES", "IGA_TERMS", "IGLRModel", "LoadReport", "LocalRefiner", "MIT_CONFIGS",
           "MixVisionTransformer", "PretrainedLoadError", "SegFormerHead", "click_maps",
           "convert_mit_state_dict", "load_is_model", "load_pretrained_mit", "points_to_crop",
           "roi_align", "save_is_model", "with_autocast_weights"]
