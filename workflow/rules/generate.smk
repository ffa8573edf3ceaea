rule generate:
    input:
        manifest=training_manifest,
        preprocessed=preprocessed_shards,
        model="results/models/stage3/{dataset}/{experiment}",
    output:
        "results/reports/{dataset}/{experiment}.parquet",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("generate"),
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
        "--model {input.model} --out {output} > {log} 2>&1"
