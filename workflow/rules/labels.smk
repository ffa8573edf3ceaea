rule labels_shard:
    input:
        manifest=STAGE1_CASES,
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
        "results/benchmarks/labels_shard/shard_{shard}.tsv"
    priority: 3
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} labels --manifest {input.manifest} --shard {wildcards.shard} "
        "--sources {input.sources} --granularities {params.granularities} --out {output} > {log} 2>&1"


rule abdomen_labels_shard:
    input:
        ABDOMEN_MANIFEST,
    output:
        directory("results/labels/abdomen_atlas/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        label_map=config["abdomen_atlas"]["label_map"],
        lesion_min_mm3=config["abdomen_atlas"]["lesion_min_mm3"],
        on_error=config["on_volume_error"],
    log:
        "results/logs/labels_abdomen/shard_{shard}.log",
    benchmark:
        "results/benchmarks/abdomen_labels_shard/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} labels-abdomen --manifest {input} --shard {wildcards.shard} "
        "--out {output} > {log} 2>&1"


rule abdomen_qc:
    input:
        abdomen_label_shards,
    output:
        "results/qc/abdomen_atlas/lesion_labels.md",
        "results/qc/abdomen_atlas/missing_classes.md",
    params:
        config=EFFECTIVE_CONFIG,
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/qc/abdomen_atlas.log",
    benchmark:
        "results/benchmarks/abdomen_qc.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} abdomen-qc --shards {input} --out {params.out} > {log} 2>&1"
