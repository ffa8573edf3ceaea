rule evaluate:
    input:
        reports="results/reports/{dataset}/{experiment}.parquet",
        manifest=training_manifest,
    output:
        "results/metrics/{dataset}/{experiment}.json",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} evaluate --reports {input.reports} --manifest {input.manifest} --out {output} > {log} 2>&1"


rule baseline:
    input:
        training_manifest,
    output:
        "results/metrics/{dataset}/baseline_most_frequent.json",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("baseline"),
    log:
        "results/logs/evaluate/{dataset}/baseline.log",
    benchmark:
        "results/benchmarks/baseline/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} baseline --manifest {input} --out {output} > {log} 2>&1"


rule abdomen_eval:
    input:
        training_manifest,
    output:
        "results/metrics/{dataset}/reference.json",
    wildcard_constraints:
        dataset="abdomen_atlas",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("abdomen-eval"),
    log:
        "results/logs/evaluate/{dataset}/reference.log",
    benchmark:
        "results/benchmarks/abdomen_eval/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} abdomen-eval --manifest {input} --out {output} "
        "> {log} 2>&1"


rule reconcile:
    input:
        manifest=MANIFEST if CT_RATE else [],
        unlisted=UNLISTED_VOLUMES if CT_RATE else [],
        stage1_cases=STAGE1_CASES if CT_RATE else [],
        preprocessed=lambda wc: [s for d in DATASETS for s in preprocessed_of(d)],
        pseudolabels=lambda wc: [d for s in config["pseudolabels"]["sources"] for d in pseudolabel_shards(s)]
        if CT_RATE else [],
        labels=lambda wc: (ct_rate_label_shards(wc) if CT_RATE else [])
        + [s for d in MASKED_DATASETS for s in mask_label_shards_of(d)],
        manifests=[training_manifest_path(d) for d in DATASETS if d != "ct_rate"],
    output:
        rejected="results/qc/rejected.csv",
        table="results/qc/reconciliation.csv",
        md="results/qc/reconciliation.md",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("reconcile"),
        ct_rate=ct_rate_reconcile_args,
        datasets=" ".join(f"{d}={training_manifest_path(d)}" for d in DATASETS if d != "ct_rate"),
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
        "uvlm --config {params.config} reconcile {params.ct_rate} --preprocessed {input.preprocessed} "
        "--labels {input.labels} --datasets {params.datasets} --rejected {output.rejected} --table {output.table} "
        "> {log} 2>&1"


rule tables:
    input:
        metrics=run_metrics(),
        baseline="results/metrics/ct_rate/baseline_most_frequent.json" if CT_RATE else [],
        published="config/published.yaml",
        stage2=run_stage2_dirs(),
        abdomen=abdomen_metrics(),
        detections=seg_detections(),
    output:
        expand("results/tables/{table}.{ext}", table=TABLES, ext=("md", "csv")),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("tables"),
        abdomen=lambda wc, input: f"--abdomen {input.abdomen}" if input.abdomen else "",
        baseline=lambda wc, input: f"--baseline {input.baseline}" if input.baseline else "",
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/tables.log",
    benchmark:
        "results/benchmarks/tables.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} tables --metrics {input.metrics} --stage2 {input.stage2} "
        "{params.baseline} --published {input.published} {params.abdomen} --detections {input.detections} "
        "--out-dir {params.out} "
        "> {log} 2>&1"


rule dataset_tables:
    input:
        metrics=lambda wc: run_outputs("metrics", wc.dataset),
        stage2=lambda wc: PLANS[wc.dataset].stage2_dirs,
        published="config/published.yaml",
    output:
        expand("results/tables/{table}_{{dataset}}.{ext}", table=("table4_classification", "table5_ablations"),
               ext=("md", "csv")),
    wildcard_constraints:
        dataset=one_of(CSV_DATASETS),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("dataset-tables"),
        stage2=lambda wc, input: f"--stage2 {' '.join(input.stage2)}" if input.stage2 else "",
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/dataset_tables/{dataset}.log",
    benchmark:
        "results/benchmarks/dataset_tables/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} dataset-tables --metrics {input.metrics} "
        "{params.stage2} --published {input.published} --out-dir {params.out} > {log} 2>&1"


rule figures:
    input:
        metrics=run_outputs("metrics", "ct_rate"),
        baseline="results/metrics/ct_rate/baseline_most_frequent.json",
        models=run_model_dirs(),
        reports=run_outputs("reports", "ct_rate"),
        preprocessed=lambda wc: preprocessed_of("ct_rate"),
    output:
        "results/figures/per_class_f1.png",
        "results/figures/training_curves.png",
        expand("results/figures/qualitative_{name}.png", name=PLAN.names if PLAN else []),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("figures"),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} figures --metrics {input.metrics} --baseline {input.baseline} "
        "--models {input.models} --reports {input.reports} --preprocessed {input.preprocessed} "
        "--out-dir {params.out} > {log} 2>&1"


rule report_html:
    input:
        tables=expand("results/tables/{table}.csv", table=TABLES + CSV_TABLES),
        reconciliation="results/qc/reconciliation.csv",
        figures=rules.figures.output if CT_RATE else [],
        qc=qc_tables(),
    output:
        "results/report.html",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("report-html"),
    log:
        "results/logs/report_html.log",
    benchmark:
        "results/benchmarks/report_html.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    shell:
        "uvlm --config {params.config} report-html --tables {input.tables} {input.reconciliation} --figures {input.figures} "
        "--out {output} > {log} 2>&1"
