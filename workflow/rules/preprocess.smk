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
    threads: config["threads"]  # the shard's volumes in this many processes (the output does not depend on it)
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 600 * threads,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} preprocess --manifest {input} --shard {wildcards.shard} "
        "--workers {threads} --out {output} > {log} 2>&1"
