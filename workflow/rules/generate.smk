rule generate:
    input:
        manifest=training_manifest,
        preprocessed=preprocessed_shards,
        model="results/models/stage3/{dataset}/{experiment}",
        features=frozen_features("valid"),
    output:
        "results/reports/{dataset}/{experiment}.parquet",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("generate"),
        features_arg=lambda w, input: f"--features {input.features}" if input.features else "",
    log:
        "results/logs/generate/{dataset}/{experiment}.log",
    benchmark:
        "results/benchmarks/generate/{dataset}/{experiment}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=min(config["gpus"]["stage3"], 1),
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} generate --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "--model {input.model} {params.features_arg} --out {output} > {log} 2>&1"


rule seg_detect:
    input:
        manifest=training_manifest,
        model="results/models/stage1/{dataset}/seg_{granularity}",
        label_map=config["abdomen_atlas"]["label_map"],
    output:
        directory("results/reports/{dataset}/nnunet_seg_{granularity}"),
    wildcard_constraints:
        dataset="abdomen_atlas",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("seg-detect"),
    log:
        "results/logs/seg_detect/{dataset}/seg_{granularity}.log",
    benchmark:
        "results/benchmarks/seg_detect/{dataset}/seg_{granularity}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=min(config["gpus"]["stage1"], 1),
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} seg-detect --manifest {input.manifest} "
        "--model {input.model} --label-map {input.label_map} --granularity {wildcards.granularity} --out {output} "
        "> {log} 2>&1"
