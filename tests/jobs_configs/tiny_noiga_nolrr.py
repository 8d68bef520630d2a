"""Test config for run_ablation.py: tiny_full without IGA and without the refiner."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_full  # noqa: E402

from isegm.engine import recipe  # noqa: E402

MODEL_NAME = "tiny_noiga_nolrr"
RECIPE = tiny_full.RECIPE.replace(model_kwargs={"iga_stages": (), "use_refiner": False})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
