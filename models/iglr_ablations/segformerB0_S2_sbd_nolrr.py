"""Ablation "no LRR": coarse prediction only (no local region refiner; its losses are dropped)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_nolrr"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"use_refiner": False})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
