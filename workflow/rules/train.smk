rule tokenizer:
    input:
        MANIFEST,
    output:
        "results/models/tokenizer/tokenizer.json",
    params:
        config=EFFECTIVE_CONFIG,
        vocab_size=config["stage3"]["vocab_size"],
        tokenizer_dir=config["stage3"]["tokenizer_dir"],
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
        directory("results/nnunet/raw/{gran}"),
    params:
        config=EFFECTIVE_CONFIG,
        dataset_ids=config["stage1"]["dataset_ids"],
        seed=config["seed"],
    log:
        "results/logs/nnunet_export/{gran}.log",
    benchmark:
        "results/benchmarks/nnunet_export/{gran}.tsv"
    priority: 3
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/train.yaml"
    shell:
        "uvlm --config {params.config} nnunet-export --manifest {input.manifest} --labels {input.labels} "
        "--granularity {wildcards.gran} --out {output} > {log} 2>&1"


rule stage1:
    input:
        "results/nnunet/raw/{gran}",
    output:
        directory("results/models/stage1/seg_{gran}"),
    params:
        config=EFFECTIVE_CONFIG,
        stage1=config["stage1"],
        encoder=config["encoder"],
        work="results/nnunet/work/{gran}",
        launch=launcher("stage1"),
    log:
        "results/logs/stage1/seg_{gran}.log",
    benchmark:
        "results/benchmarks/stage1/seg_{gran}.tsv"
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
        lambda wc: ancient(config["stage1"]["import_checkpoints"][wc.gran]),
    output:
        directory("results/models/stage1/seg_{gran}"),
    wildcard_constraints:
        gran=IMPORTED_GRANULARITIES,
    params:
        config=EFFECTIVE_CONFIG,
        encoder=config["encoder"],
    log:
        "results/logs/stage1/import_seg_{gran}.log",
    benchmark:
        "results/benchmarks/stage1_import/seg_{gran}.tsv"
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
        stage2=config["stage2"],
        encoder=config["encoder"],
        selection=config["model_selection"],
        seed=config["seed"],
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
        stage3=config["stage3"],
        encoder=config["encoder"],
        grid=config["preprocess"]["grid"],
        selection=config["model_selection"],
        seed=config["seed"],
        experiment=lambda w: config["experiments"][w.experiment],
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
