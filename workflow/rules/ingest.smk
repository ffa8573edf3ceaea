rule demo_data:
    output:
        directory(DEMO_ROOT),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("demo-data"),
    log:
        "results/logs/demo_data.log",
    benchmark:
        "results/benchmarks/demo_data.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} demo-data {output} > {log} 2>&1"


checkpoint ingest:
    input:
        ct_rate_root_input,
    output:
        manifest=MANIFEST,
        unlisted=UNLISTED_VOLUMES,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("ingest"),
    log:
        "results/logs/ingest.log",
    benchmark:
        "results/benchmarks/ingest.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} ingest --root {input} --out {output.manifest} --unlisted {output.unlisted} > {log} 2>&1"


rule demo_abdomen:
    output:
        directory(ABDOMEN_DEMO_ROOT),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("demo-abdomen"),
    log:
        "results/logs/demo_abdomen.log",
    benchmark:
        "results/benchmarks/demo_abdomen.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} demo-abdomen {output} > {log} 2>&1"


checkpoint ingest_abdomen:
    input:
        abdomen_root_input,
    output:
        ABDOMEN_MANIFEST,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("ingest-abdomen"),
    log:
        "results/logs/ingest_abdomen.log",
    benchmark:
        "results/benchmarks/ingest_abdomen.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} ingest-abdomen --root {input} --out {output} > {log} 2>&1"


checkpoint ingest_csv:
    input:
        csv_source,
    output:
        "results/manifest/{dataset}.parquet",
    wildcard_constraints:
        dataset=one_of(CSV_DATASETS),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("ingest-csv"),
    log:
        "results/logs/ingest_csv/{dataset}.log",
    benchmark:
        "results/benchmarks/ingest_csv/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} ingest-csv --out {output} > {log} 2>&1"
