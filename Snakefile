# U-VLM pipeline: raw CT + reports -> pseudo-labels -> three training stages -> reports -> tables.
# Run the embedded demo with `snakemake --cores 2 all`; a real CT-RATE copy with
# `snakemake --cores 2 all --config ct_rate_root=/path/to/CT-RATE`.
from snakemake.utils import min_version, validate

from uvlm.config import with_defaults

min_version("9.0")


# The embedded demo config. A --configfile overrides its keys one by one (config/ct_rate.yaml says only what
# differs), replacing the experiments and labelers catalogues whole: uvlm.config.with_defaults.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"

else:
    _layered = with_defaults(config)
    config.clear()
    config.update(_layered)


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/pseudolabel.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/phases.smk"


rule all:
    input:
        ["results/tables/main.md", "results/tables/main.csv"] if CT_RATE else [],
        "results/report.html",
        qc_tables(),
        abdomen_outputs(),
