"""IGLR, MiT-B3, S2 pipeline, trained on COCO+LVIS: 85 epochs of 30k samples, batch 24, decay at 65/85
(released schedule), keep_background_prob 0.05, IGA coefficients at lr x 10.
    python train.py models/iglr/segformerB3_S2_cclvs.py --ngpus=2 --batch-size=24"""
from isegm.engine import recipe

MODEL_NAME = "segformerB3_S2_cclvs"
RECIPE = recipe.COCO_LVIS.replace(backbone="mit_b3", batch_size=24, milestones=(65, 85))
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
