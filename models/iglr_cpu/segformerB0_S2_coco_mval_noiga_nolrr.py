"""CPU ablation "no IGA, no LRR: input fusion only and coarse prediction only".
Otherwise identical to segformerB0_S2_coco_mval.py (recipe.COCO_MVAL_CPU).
    python scripts/run_ablation.py models/iglr_cpu/segformerB0_S2_coco_mval.py \
        models/iglr_cpu/segformerB0_S2_coco_mval_noiga_nolrr.py --steps 5000 --datasets GrabCut,COCO_MVal_val"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_coco_mval_noiga_nolrr"
RECIPE = recipe.COCO_MVAL_CPU.replace(model_kwargs={"iga_stages": (), "use_refiner": False})
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
