"""Ablation "IGA terms one at a time": only the feedback term c_h m(i) m(j)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_iga_feedback"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"iga_terms": ("feedback",)})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
