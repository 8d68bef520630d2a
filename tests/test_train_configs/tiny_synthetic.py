"""Test config: the CPU synthetic recipe shrunk to B0 at 64x64, 2 epochs of 2 steps."""
from isegm.engine import recipe

MODEL_NAME = "tiny_synthetic"
RECIPE = recipe.SYNTHETIC_CPU.replace(
    crop_size=(64, 64), num_max_points=4, model_kwargs={"refine_size": 32},
    train_dataset_kwargs={"num_samples": 16, "image_size": (80, 80), "split": "train"},
    val_dataset_kwargs={"num_samples": 4, "image_size": (80, 80), "split": "val"},
    epoch_len=8, batch_size=4, epochs=2, milestones=(1,), max_num_next_clicks=2,
    checkpoint_interval=1, image_dump_interval=1, log_interval=1)
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
