rule tokenizer:
    input:
        MANIFEST,
    output:
        "results/models/tokenizer/tokenizer.json",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("tokenizer"),
    log:
        "results/logs/tokenizer.log",
    benchmark:
        "results/benchmarks/tokenizer.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} tokenizer --manifest {input} --out {output} > {log} 2>&1"


rule nnunet_export:
    input:
        manifest=STAGE1_CASES,
        labels=label_shards,
    output:
        directory("results/nnunet/raw/{granularity}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("nnunet-export"),
    log:
        "results/logs/nnunet_export/{granularity}.log",
    benchmark:
        "results/benchmarks/nnunet_export/{granularity}.tsv"
    priority: 3
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} nnunet-export --manifest {input.manifest} --labels {input.labels} "
        "--granularity {wildcards.granularity} --out {output} > {log} 2>&1"


rule stage1:
    input:
        "results/nnunet/raw/{granularity}",
    output:
        directory("results/models/stage1/seg_{granularity}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage1"),
        work="results/nnunet/work/{granularity}",
        launch=launcher("stage1"),
    log:
        "results/logs/stage1/seg_{granularity}.log",
    benchmark:
        "results/benchmarks/stage1/seg_{granularity}.tsv"
    priority: 3  # the critical path (Stage 1 labels -> Stage 1 -> 2 -> 3) first
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage1"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} stage1 --raw {input} --work {params.work} --out {output} > {log} 2>&1"


rule stage1_import:
    input:
        lambda wc: ancient(config["stage1"]["import_checkpoints"][wc.granularity]),
    output:
        directory("results/models/stage1/seg_{granularity}"),
    wildcard_constraints:
        granularity=IMPORTED_GRANULARITIES,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage1-import"),
    log:
        "results/logs/stage1/import_seg_{granularity}.log",
    benchmark:
        "results/benchmarks/stage1_import/seg_{granularity}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} stage1-import --checkpoint {input} --out {output} > {log} 2>&1"


ruleorder: stage1_import > stage1


rule stage2:
    input:
        manifest=MANIFEST,
        preprocessed=preprocessed_shards,
        init=stage2_init,
    output:
        directory("results/models/stage2/cls_{init}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage2"),
        init_arg=lambda w, input: f"--init {input.init}" if input.init else "",
        launch=launcher("stage2"),
    log:
        "results/logs/stage2/cls_{init}.log",
    benchmark:
        "results/benchmarks/stage2/cls_{init}.tsv"
    priority: 2
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage2"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} stage2 --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "{params.init_arg} --out {output} > {log} 2>&1"


rule stage3:
    input:
        manifest=MANIFEST,
        preprocessed=preprocessed_shards,
        tokenizer="results/models/tokenizer/tokenizer.json",
        init=stage3_init,
    output:
        directory("results/models/stage3/{experiment}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage3"),
        init_arg=lambda w, input: f"--init {input.init}" if input.init else "",
        launch=launcher("stage3"),
    log:
        "results/logs/stage3/{experiment}.log",
    benchmark:
        "results/benchmarks/stage3/{experiment}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage3"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} stage3 --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "--tokenizer {input.tokenizer} {params.init_arg} --experiment {wildcards.experiment} "
        "--out {output} > {log} 2>&1"
