"""IGLR, MiT-B0, S2 pipeline, trained on SBD: 230 epochs, batch 28, lr 5e-4 decayed x0.1 at 190/210
(released schedule; recipe.SBD), IGA coefficients at lr x 10.
    python train.py models/iglr/segformerB0_S2_sbd.py --ngpus=2 --batch-size=28"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28)
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
