checkpoint stage1_cases:
    input:
        MANIFEST,
    output:
        STAGE1_CASES,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage1-cases"),
    log:
        "results/logs/stage1_cases.log",
    benchmark:
        "results/benchmarks/stage1_cases.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} stage1-cases --manifest {input} --out {output} > {log} 2>&1"


rule labels_shard:
    input:
        manifest=STAGE1_CASES,
        sources=source_shards,
        label_map=config["label_map"],
    output:
        directory("results/labels/ct_rate/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("labels"),
        granularities=needed_granularities(),
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
        "--sources {input.sources} --label-map {input.label_map} --granularities {params.granularities} --out {output} > {log} 2>&1"


rule mask_labels_shard:
    input:
        manifest=lambda wc: manifest_path(wc.dataset),
        label_map=lambda wc: label_map_of(wc.dataset),
    output:
        directory("results/labels/{dataset}/shard_{shard}"),
    wildcard_constraints:
        dataset=one_of(MASKED_DATASETS),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("mask-labels"),
    log:
        "results/logs/labels/{dataset}/shard_{shard}.log",
    benchmark:
        "results/benchmarks/mask_labels_shard/{dataset}/shard_{shard}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} mask-labels --manifest {input.manifest} "
        "--shard {wildcards.shard} --label-map {input.label_map} --out {output} > {log} 2>&1"


rule abdomen_cases:
    input:
        manifest=ABDOMEN_MANIFEST,
        labels=abdomen_label_shards,
    output:
        ABDOMEN_CASES,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("abdomen-cases"),
    log:
        "results/logs/abdomen_cases.log",
    benchmark:
        "results/benchmarks/abdomen_cases.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} abdomen-cases --manifest {input.manifest} --labels {input.labels} --out {output} "
        "> {log} 2>&1"


rule abdomen_qc:
    input:
        abdomen_label_shards,
    output:
        "results/qc/abdomen_atlas/lesion_labels.md",
        "results/qc/abdomen_atlas/missing_classes.md",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("abdomen-qc"),
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
