"""IGLR: Interaction-Guided attention and Local Region refinement for interactive segmentation."""

__version__ = "0.1.0"
