rule labels_shard:
    input:
        manifest=MANIFEST,
        sources=source_shards,
    output:
        directory("results/labels/ct_rate/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        granularities=needed_granularities(),
        sources=config["pseudolabels"]["sources"],
        label_map=config["label_map"],
        lesions_complete=config["lesions_complete"],
        on_error=config["on_volume_error"],
    log:
        "results/logs/labels/shard_{shard}.log",
    benchmark:
        "results/benchmarks/labels/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/uvlm.yaml"
    shell:
        "uvlm --config {params.config} labels --manifest {input.manifest} --shard {wildcards.shard} "
        "--sources {input.sources} --granularities {params.granularities} --out {output} > {log} 2>&1"
