"""Training: the one trainer, losses, metrics, optimisation, distributed utilities, experiments.

Imports are kept light here; use the submodules (`isegm.engine.trainer`, `.losses`, ...).
"""
