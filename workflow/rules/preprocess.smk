rule preprocess_shard:
    input:
        MANIFEST,
    output:
        directory("results/preprocessed/ct_rate/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        preprocess=config["preprocess"],
        on_error=config["on_volume_error"],
    log:
        "results/logs/preprocess/shard_{shard}.log",
    benchmark:
        "results/benchmarks/preprocess_shard/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} preprocess --manifest {input} --shard {wildcards.shard} --out {output} > {log} 2>&1"


rule reconcile:
    input:
        manifest=MANIFEST,
        unlisted=UNLISTED_VOLUMES,
        stage1_cases=STAGE1_CASES,
        preprocessed=preprocessed_shards,
        pseudolabels=lambda wc: [d for s in config["pseudolabels"]["sources"] for d in pseudolabel_shards(s)],
        labels=label_shards,
    output:
        rejected="results/qc/rejected.csv",
        table="results/qc/reconciliation.csv",
        md="results/qc/reconciliation.md",
    params:
        config=EFFECTIVE_CONFIG,
    log:
        "results/logs/reconcile.log",
    benchmark:
        "results/benchmarks/reconcile.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} reconcile --manifest {input.manifest} --unlisted {input.unlisted} "
        "--stage1-cases {input.stage1_cases} --preprocessed {input.preprocessed} --pseudolabels {input.pseudolabels} "
        "--labels {input.labels} --rejected {output.rejected} --table {output.table} > {log} 2>&1"
