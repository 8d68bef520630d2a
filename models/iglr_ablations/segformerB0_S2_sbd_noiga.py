"""Ablation "no IGA": clicks and feedback enter by input fusion only (no attention bias in any stage)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_noiga"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"iga_stages": ()})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
