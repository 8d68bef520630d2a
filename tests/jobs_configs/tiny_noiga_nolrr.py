"""Test config for run_ablation.py: tiny_full without IGA and without the refiner."""
from isegm.engine import recipe
from tests.jobs_configs import tiny_full

MODEL_NAME = "tiny_noiga_nolrr"
RECIPE = tiny_full.RECIPE.replace(model_kwargs={"iga_stages": (), "use_refiner": False})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
