rule generate:
    input:
        manifest=MANIFEST,
        preprocessed=preprocessed_shards,
        model="results/models/stage3/{experiment}",
    output:
        "results/reports/{experiment}.parquet",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("generate"),
    log:
        "results/logs/generate/{experiment}.log",
    benchmark:
        "results/benchmarks/generate/{experiment}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=min(config["gpus"]["stage3"], 1),
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} generate --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "--model {input.model} --out {output} > {log} 2>&1"
