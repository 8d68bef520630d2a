"""Inference: click simulation, metrics, predictors and the NoC evaluation loop."""
