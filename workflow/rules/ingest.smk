rule demo_data:
    output:
        directory(DEMO_ROOT),
    params:
        config=EFFECTIVE_CONFIG,
        demo=config["demo"],
        seed=config["seed"],
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
        shard_size=config["shard_size"],
        rexgrounding_root=config["rexgrounding_root"],
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


checkpoint stage1_cases:
    input:
        MANIFEST,
    output:
        STAGE1_CASES,
    params:
        config=EFFECTIVE_CONFIG,
        lesions_complete=config["lesions_complete"],
        max_cases=config["stage1"]["max_cases"],
        seed=config["seed"],
        shard_size=config["shard_size"],
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


rule demo_abdomen:
    output:
        directory(ABDOMEN_DEMO_ROOT),
    params:
        config=EFFECTIVE_CONFIG,
        demo=config["abdomen_atlas"]["demo"],
        seed=config["seed"],
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
        "uvlm --config {params.config} demo-data --dataset abdomen_atlas {output} > {log} 2>&1"


checkpoint ingest_abdomen:
    input:
        abdomen_root_input,
    output:
        ABDOMEN_MANIFEST,
    params:
        config=EFFECTIVE_CONFIG,
        shard_size=config["shard_size"],
        valid_fraction=config["abdomen_atlas"]["valid_fraction"],
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
