rule preprocess_shard:
    input:
        ingest_manifest,
    output:
        directory("results/preprocessed/{dataset}/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("preprocess"),
    log:
        "results/logs/preprocess/{dataset}/shard_{shard}.log",
    benchmark:
        "results/benchmarks/preprocess_shard/{dataset}/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} preprocess --manifest {input} --shard {wildcards.shard} --out {output} > {log} 2>&1"
