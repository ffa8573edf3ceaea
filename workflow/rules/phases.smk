# One target per phase: `snakemake phase_stage2` builds everything up to and including that phase.
# dvc.yaml runs them in order (`dvc repro`), one DVC stage per phase.


onstart:
    write_effective_config()
    for folder in dvc_out_dirs():
        os.makedirs(folder, exist_ok=True)


rule phase_data:
    input:
        MANIFEST,
        ABDOMEN_MANIFEST if config["abdomen_atlas"]["enabled"] else [],


rule phase_labels:
    input:
        label_shards,
        qc_tables(),
        abdomen_outputs(),


rule phase_preprocess:
    input:
        preprocessed_shards,


rule phase_stage1:
    input:
        run_stage1_dirs(),


rule phase_stage2:
    input:
        run_stage2_dirs(),


rule phase_stage3:
    input:
        "results/models/tokenizer/tokenizer.json",
        expand("results/models/stage3/{name}", name=PLAN.names),


rule phase_generate:
    input:
        expand("results/reports/{name}.parquet", name=PLAN.names),
