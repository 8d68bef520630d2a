"""IGLR, MiT-B3, S2 pipeline, trained on SBD: 60 epochs, batch 24, lr 5e-4 decayed x0.1 at 50/60
(released schedule), IGA coefficients at lr x 10.
    python train.py models/iglr/segformerB3_S2_sbd.py --ngpus=2 --batch-size=24"""
from isegm.engine import recipe

MODEL_NAME = "segformerB3_S2_sbd"
RECIPE = recipe.SBD.replace(backbone="mit_b3", batch_size=24, epochs=60, milestones=(50, 60))
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
