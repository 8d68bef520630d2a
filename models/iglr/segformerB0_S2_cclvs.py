"""IGLR, MiT-B0, S2 pipeline, trained on COCO+LVIS: 85 epochs of 30k samples, batch 28, decay at 70/80,
keep_background_prob 0.05 (recipe.COCO_LVIS), IGA coefficients at lr x 10.
    python train.py models/iglr/segformerB0_S2_cclvs.py --ngpus=2 --batch-size=28"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_cclvs"
RECIPE = recipe.COCO_LVIS.replace(backbone="mit_b0", batch_size=28)
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
