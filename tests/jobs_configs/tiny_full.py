"""Test config for run_ablation.py: the CPU synthetic recipe shrunk to B0 at 64x64 crops."""
from isegm.engine import recipe

MODEL_NAME = "tiny_full"
RECIPE = recipe.SYNTHETIC_CPU.replace(
    crop_size=(64, 64), num_max_points=4, model_kwargs={"refine_size": 32},
    train_dataset_kwargs={"num_samples": 16, "image_size": (80, 80), "split": "train"},
    val_dataset=None, batch_size=4, max_num_next_clicks=1, image_dump_interval=0)
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
