"""Ablation of the focus strategy: the predictor's focus region is the whole object
(training is the reference one; the strategy is stored in the model for evaluation)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_focus_object"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"focus_strategy": "whole_object"})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
