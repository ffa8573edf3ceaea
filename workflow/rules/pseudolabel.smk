# Anatomy pseudo-labels: one job per (labeler, shard); model-based labelers request a GPU.


rule pseudolabel_shard:
    input:
        STAGE1_CASES,
    output:
        directory("results/pseudolabels/ct_rate/{labeler}/shard_{shard}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("pseudolabel"),
    log:
        "results/logs/pseudolabels/{labeler}/shard_{shard}.log",
    benchmark:
        "results/benchmarks/pseudolabel_shard/{labeler}/shard_{shard}.tsv"
    priority: 3
    # Model labelers spend most of a GPU job on the CPU (resampling, export): they get the training jobs' threads.
    # A 192-volume shard takes 1.5-2.5 h on an H200, up to ~10 h with slow CPUs (benchmarks/results/pseudolabel_plan.md).
    threads: lambda wc: config["threads"] if labeler_gpus(wc.labeler) else 1
    resources:
        mem_mb=lambda wc: 16000 if labeler_gpus(wc.labeler) else 4000,
        runtime=lambda wc: 720 if labeler_gpus(wc.labeler) else 120,
        gpu=lambda wc: labeler_gpus(wc.labeler),
    conda:
        "../../envs/pseudolabel.yaml"
    shell:
        "uvlm --config {params.config} pseudolabel --manifest {input} --shard {wildcards.shard} "
        "--labeler {wildcards.labeler} --out {output} > {log} 2>&1"


rule pseudolabel_qc:
    input:
        shards=lambda wc: pseudolabel_shards(wc.labeler),
        reference=lambda wc: qc_reference_shards(wc.labeler),
        label_map=config["label_map"],
    output:
        classes="results/qc/ct_rate/{labeler}/classes.md",
        missing="results/qc/ct_rate/{labeler}/missing.csv",
    params:
        config=EFFECTIVE_CONFIG,
        out=lambda wc, output: os.path.dirname(output[0]),
        reads=step_reads("pseudolabel-qc"),
        reference=lambda wc, input: ("--reference " + " ".join(input.reference)) if input.reference else "",
    log:
        "results/logs/qc/{labeler}.log",
    benchmark:
        "results/benchmarks/pseudolabel_qc/{labeler}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/data.yaml"
    shell:
        "uvlm --config {params.config} pseudolabel-qc --labeler {wildcards.labeler} --shards {input.shards} "
        "{params.reference} --label-map {input.label_map} --out {params.out} > {log} 2>&1"
