rule evaluate:
    input:
        reports="results/reports/{experiment}.parquet",
        manifest=MANIFEST,
    output:
        "results/metrics/{experiment}.json",
    params:
        config=EFFECTIVE_CONFIG,
    log:
        "results/logs/evaluate/{experiment}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/uvlm.yaml"
    shell:
        "uvlm --config {params.config} evaluate --reports {input.reports} --manifest {input.manifest} --out {output} > {log} 2>&1"


rule baseline:
    input:
        MANIFEST,
    output:
        "results/metrics/baseline_most_frequent.json",
    params:
        config=EFFECTIVE_CONFIG,
    log:
        "results/logs/evaluate/baseline.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/uvlm.yaml"
    shell:
        "uvlm --config {params.config} baseline --manifest {input} --out {output} > {log} 2>&1"


rule tables:
    input:
        metrics=run_metrics(),
        baseline="results/metrics/baseline_most_frequent.json",
        published="config/published.yaml",
    output:
        md="results/tables/main.md",
        csv="results/tables/main.csv",
    params:
        config=EFFECTIVE_CONFIG,
        run=config["run"],
        titles={name: EXPERIMENTS[name]["title"] for name in config["run"]},
    log:
        "results/logs/tables.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/uvlm.yaml"
    shell:
        "uvlm --config {params.config} tables --metrics-dir results/metrics --baseline {input.baseline} "
        "--published {input.published} --md {output.md} --csv {output.csv} > {log} 2>&1"
