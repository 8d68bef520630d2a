"""Ablation "IGA terms one at a time": only the negative-click term b_h N(j)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_iga_neg"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"iga_terms": ("neg",)})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
