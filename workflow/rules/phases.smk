# One target per phase: `snakemake phase_stage2` builds everything up to and including that phase.
# dvc.yaml runs them in order (`dvc repro`), one DVC stage per phase.


onstart:
    write_effective_config()
    for folder in dvc_out_dirs():
        os.makedirs(folder, exist_ok=True)


rule phase_data:
    input:
        [manifest_path(d) for d in DATASETS],


rule phase_labels:
    input:
        ct_rate_label_shards if CT_RATE else [],
        qc_tables(),
        abdomen_outputs(),
        [training_manifest_path(d) for d in DATASETS],
        lambda wc: [s for d in MASKED_DATASETS for s in mask_label_shards_of(d)],


rule phase_preprocess:
    input:
        lambda wc: [s for d in DATASETS for s in preprocessed_of(d)],


rule phase_stage1:
    input:
        run_stage1_dirs(),


rule phase_stage2:
    input:
        run_stage2_dirs(),


rule phase_stage3:
    input:
        [f"results/models/tokenizer/{d}/tokenizer.json" for d in DATASETS],
        [d for plan in PLANS.values() for e in plan.experiments for d in [e.stage3_dir(plan.dataset)]],


rule phase_generate:
    input:
        run_outputs("reports"),
        seg_detections(),
