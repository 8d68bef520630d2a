"""Ablation "no IGA, no LRR": an input-fusion SegFormer with coarse prediction only."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_noiga_nolrr"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"iga_stages": (), "use_refiner": False})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
