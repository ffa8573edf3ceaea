rule tokenizer:
    input:
        training_manifest,
    output:
        "results/models/tokenizer/{dataset}/tokenizer.json",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("tokenizer"),
    log:
        "results/logs/tokenizer/{dataset}.log",
    benchmark:
        "results/benchmarks/tokenizer/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} tokenizer --manifest {input} --out {output} > {log} 2>&1"


rule nnunet_export:
    input:
        manifest=stage1_case_list,
        labels=label_shards,
    output:
        directory("results/nnunet/{dataset}/raw/{granularity}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("nnunet-export"),
    log:
        "results/logs/nnunet_export/{dataset}/{granularity}.log",
    benchmark:
        "results/benchmarks/nnunet_export/{dataset}/{granularity}.tsv"
    priority: 3
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} nnunet-export --manifest {input.manifest} --labels {input.labels} "
        "--granularity {wildcards.granularity} --out {output} > {log} 2>&1"


rule stage1:
    input:
        "results/nnunet/{dataset}/raw/{granularity}",
    output:
        directory("results/models/stage1/{dataset}/seg_{granularity}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage1"),
        work="results/nnunet/{dataset}/work/{granularity}",
        launch=launcher("stage1"),
    log:
        "results/logs/stage1/{dataset}/seg_{granularity}.log",
    benchmark:
        "results/benchmarks/stage1/{dataset}/seg_{granularity}.tsv"
    priority: 3  # the critical path (Stage 1 labels -> Stage 1 -> 2 -> 3) first
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage1"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} --dataset {wildcards.dataset} stage1 --raw {input} --work {params.work} --out {output} > {log} 2>&1"


rule stage1_import:
    input:
        lambda wc: ancient(config["stage1"]["import_checkpoints"][wc.granularity]),
    output:
        directory("results/models/stage1/{dataset}/seg_{granularity}"),
    wildcard_constraints:
        granularity=IMPORTED_GRANULARITIES,
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage1-import"),
    log:
        "results/logs/stage1/{dataset}/import_seg_{granularity}.log",
    benchmark:
        "results/benchmarks/stage1_import/{dataset}/seg_{granularity}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} stage1-import --checkpoint {input} --out {output} > {log} 2>&1"


ruleorder: stage1_import > stage1


rule stage2:
    input:
        manifest=training_manifest,
        preprocessed=preprocessed_shards,
        init=stage2_init,
    output:
        directory("results/models/stage2/{dataset}/cls_{init}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage2"),
        init_arg=lambda w, input: f"--init {input.init}" if input.init else "",
        launch=launcher("stage2"),
    log:
        "results/logs/stage2/{dataset}/cls_{init}.log",
    benchmark:
        "results/benchmarks/stage2/{dataset}/cls_{init}.tsv"
    priority: 2
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage2"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} --dataset {wildcards.dataset} stage2 --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "{params.init_arg} --out {output} > {log} 2>&1"


rule stage3_features:
    input:
        manifest=training_manifest,
        preprocessed=preprocessed_shards,
        init=features_init,
    output:
        directory(features_dir("{dataset}", "{encoder}", "{depth}", "{split}")),
    wildcard_constraints:
        split="train|valid",
        depth=r"\d+",
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage3-features"),
        init_arg=lambda w, input: f"--init {input.init}" if input.init else "",
    log:
        "results/logs/stage3_features/{dataset}/{encoder}-ref{depth}_{split}.log",
    benchmark:
        "results/benchmarks/stage3_features/{dataset}/{encoder}-ref{depth}_{split}.tsv"
    priority: 2
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=min(config["gpus"]["stage3"], 1),
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} --dataset {wildcards.dataset} stage3-features --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "{params.init_arg} --depth {wildcards.depth} --split {wildcards.split} --out {output} > {log} 2>&1"


rule stage3:
    input:
        manifest=training_manifest,
        preprocessed=preprocessed_shards,
        tokenizer="results/models/tokenizer/{dataset}/tokenizer.json",
        init=stage3_init,
        features=frozen_features("train"),
    output:
        directory("results/models/stage3/{dataset}/{experiment}"),
    params:
        config=EFFECTIVE_CONFIG,
        reads=step_reads("stage3"),
        init_arg=lambda w, input: f"--init {input.init}" if input.init else "",
        features_arg=lambda w, input: f"--features {input.features}" if input.features else "",
        launch=launcher("stage3"),
    log:
        "results/logs/stage3/{dataset}/{experiment}.log",
    benchmark:
        "results/benchmarks/stage3/{dataset}/{experiment}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=config["gpus"]["stage3"],
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch}uvlm --config {params.config} --dataset {wildcards.dataset} stage3 --manifest {input.manifest} --preprocessed {input.preprocessed} "
        "--tokenizer {input.tokenizer} {params.init_arg} {params.features_arg} --experiment {wildcards.experiment} "
        "--out {output} > {log} 2>&1"
