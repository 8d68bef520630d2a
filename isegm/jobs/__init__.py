"""Experiment jobs built on the trainer and the evaluator: the main job and ablation studies.

    from isegm.jobs.training import Budget, train_config
    run = train_config("models/iglr_cpu/segformerB0_S2_synthetic.py", paths, Budget(steps=400))
    from isegm.jobs.noc import evaluate_noc
    result = evaluate_noc(model, dataset, label="trained")

`scripts/main_job.py` and `scripts/run_ablation.py` are thin command lines over these.
"""
