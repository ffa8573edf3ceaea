"""What an experiment is and which models it needs: the one place the workflow, the CLI and the tables read.

An experiment is a row of the paper's Table 5: Stage 1 pretraining (none, C, C+L or F+L), Stage 2 on or
off, skip-connection (multi-layer) injection on or off (SC), frozen encoder on or off (Frz), the number
of visual tokens (VT: the token count of one encoder stage, 384 for the deepest and 3072 for the next at
the paper's 192 x 256 x 256 grid) and the decoder (our own, or a Hugging Face LM with LoRA or full
fine-tuning). A Stage 2 run is a row of Table 4: classification pretraining from one Stage 1
initialisation. Models that experiments share are trained once: one Stage 1 per granularity, one
Stage 2 per initialisation, one Stage 3 per experiment, per dataset (CT-RATE, AbdomenAtlas: each trains its own).
Model folders are named here and nowhere else: results/models/<stage>/<dataset>/<model>.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from uvlm.models.geometry import stage_shapes

MODELS = "results/models"
FEATURES = "results/features"  # a frozen encoder's stored features, per dataset (uvlm.train.feature_cache)
RANDOM_ENCODER = "random"  # the encoder name of experiments without Stage 1 or 2 (built from the seed)
GRANULARITY_TITLES = {"C": "Seg(C)", "CL": "Seg(C+L)", "FL": "Seg(F+L)"}
# decoder key -> (Table 5 "Dec." label, Hugging Face fine-tuning or None for our own decoder)
DECODERS = {"own": ("0.1B", None), "hf_lora": ("Q4B-L", "lora"), "hf_full": ("Q4B-F", "full")}
NO_STAGE1 = "none"  # the Stage 2 initialisation without Stage 1 (random encoder)
NNUNET_MODEL = "nnunet_model"  # in a Stage 1 folder: the whole segmentation network as an nnU-Net model folder


class ExperimentError(ValueError):
    """An experiment names something that does not exist; the message names the experiment and the key."""


def encoder_init_dir(dataset: str, encoder: str) -> str | None:
    """The model folder an encoder name (`Experiment.encoder_name`) stands for; None for the random encoder."""
    if encoder == RANDOM_ENCODER:
        return None
    stage, name = encoder.split("-", 1)
    return f"{MODELS}/{stage}/{dataset}/{name}"


def features_dir(dataset: str, encoder: str, depth: int | str, split: str) -> str:
    """One split's features (train: what Stage 3 fits and selects on; valid: what generation reads) of an encoder
    whose `depth`-th deepest stage makes the visual tokens (1: the deepest; a grid change keeps the folder)."""
    return f"{FEATURES}/{dataset}/{encoder}-ref{depth}/{split}"


def stage1_seg(init: str) -> str | None:
    """A Stage 2 initialisation as config `stage2_runs` names it ('none', 'C', ...) -> granularity or None."""
    return None if init == NO_STAGE1 else init


def stage1_dir(dataset: str, granularity: str) -> str:
    return f"{MODELS}/stage1/{dataset}/seg_{granularity}"


def stage2_name(seg: str | None) -> str:
    """Folder name of the Stage 2 run that starts from Stage 1 of `seg` (None: random encoder)."""
    return f"cls_seg_{seg}" if seg else f"cls_{NO_STAGE1}"


def stage2_dir(dataset: str, seg: str | None) -> str:
    return f"{MODELS}/stage2/{dataset}/{stage2_name(seg)}"


def stage3_dir(dataset: str, name: str) -> str:
    return f"{MODELS}/stage3/{dataset}/{name}"


def stage2_init_dir(dataset: str, init: str) -> str | None:
    """Stage 1 folder a Stage 2 run starts from, by its wildcard ('none' or 'seg_CL')."""
    return None if init == NO_STAGE1 else stage1_dir(dataset, init.removeprefix("seg_"))


def recipe_title(seg: str | None, cls: bool) -> str:
    """Table 5's name of a training recipe: 'Seg(C+L) Cls Rep', 'Seg(F+L) Rep', 'Cls Rep', 'None Rep'."""
    parts = ([GRANULARITY_TITLES[seg]] if seg else []) + (["Cls"] if cls else [])
    return " ".join([*parts, "Rep"]) if parts else "None Rep"


def stage_token_counts(encoder: dict, grid: list[int] | tuple[int, ...]) -> list[int]:
    """Visual tokens each encoder stage would give (D*H*W of its feature map), shallow -> deep."""
    return [math.prod(shape) for shape in stage_shapes(encoder["strides"], grid)]


def reference_stage(encoder: dict, grid: list[int] | tuple[int, ...], visual_tokens: int) -> int:
    """The encoder stage (-1 deepest, -2 next, ...) whose token count is `visual_tokens` at this grid: the
    deepest with that count (stages never repeat a count at strides > 1)."""
    counts = stage_token_counts(encoder, grid)
    if visual_tokens not in counts:
        choices = ", ".join(f"{c} (stage {i - len(counts)})" for i, c in enumerate(counts))
        raise ExperimentError(f"key 'visual_tokens' = {visual_tokens} is not the token count of any encoder "
                              f"stage at grid {list(grid)}; choose one of {choices}")
    return max(i for i, c in enumerate(counts) if c == visual_tokens) - len(counts)


@dataclass(frozen=True)
class Experiment:
    """One Table 5 row, as configured under `experiments:`."""

    name: str
    title: str
    seg: str | None           # Stage 1 granularity (C, CL, FL) or None: no segmentation pretraining
    cls: bool                 # Stage 2 classification pretraining before Stage 3
    multi_layer: bool         # SC: every mapped stage injected into its decoder layer; else input tokens only
    frozen: bool              # Frz: encoder frozen in Stage 3 (also a random one: the paper's "None Rep")
    reference_stage: int = -1  # encoder stage whose tokens are the visual tokens (-1 deepest, -2 next, ...)
    visual_tokens: int = 0     # their number at the configured grid (0: not worked out, e.g. in tests)
    decoder: str = "own"       # own | hf_lora | hf_full

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any], encoder: dict, grid: list[int]) -> Experiment:
        """Checks what the schema cannot: the token count must be one encoder stage's at this grid."""
        n = entry.get("visual_tokens", stage_token_counts(encoder, grid)[-1])
        try:
            ref = reference_stage(encoder, grid, n)
        except ExperimentError as err:
            raise ExperimentError(f"experiment '{name}': {err}") from None
        # `decoder` and `injection` values were checked by the config schema's enums before this runs
        return cls(name=name, title=entry["title"], seg=entry["seg"], cls=bool(entry["cls"]),
                   multi_layer=entry["injection"] == "multi_layer", frozen=bool(entry["freeze_encoder"]),
                   reference_stage=ref, visual_tokens=n, decoder=entry.get("decoder", "own"))

    # ------------------------------------------------------------------ what it needs, on one dataset
    def stage1_dir(self, dataset: str) -> str | None:
        return stage1_dir(dataset, self.seg) if self.seg else None

    def stage2_dir(self, dataset: str) -> str | None:
        return stage2_dir(dataset, self.seg) if self.cls else None

    def init_dir(self, dataset: str) -> str | None:
        """Where the Stage 3 encoder comes from: Stage 2, else Stage 1, else nowhere (random init)."""
        return self.stage2_dir(dataset) or self.stage1_dir(dataset)

    def stage3_dir(self, dataset: str) -> str:
        return stage3_dir(dataset, self.name)

    @property
    def encoder_name(self) -> str:
        """The Stage 3 encoder as a name: 'stage2-cls_seg_CL', 'stage1-seg_CL' or 'random'."""
        if self.cls:
            return f"stage2-{stage2_name(self.seg)}"
        return f"stage1-seg_{self.seg}" if self.seg else RANDOM_ENCODER

    def features_dir(self, dataset: str, split: str) -> str | None:
        """The stored features a frozen encoder's Stage 3 (split train) and generation (valid) read, shared by
        every frozen experiment with the same encoder and visual tokens; None when the encoder is fine-tuned."""
        return features_dir(dataset, self.encoder_name, -self.reference_stage, split) if self.frozen else None

    def model_dirs(self, dataset: str) -> list[str]:
        """Every trained model folder behind this experiment's reports on `dataset`."""
        return [d for d in (self.stage1_dir(dataset), self.stage2_dir(dataset), self.stage3_dir(dataset)) if d]

    @property
    def hf_finetune(self) -> str | None:
        """'lora' or 'full' for a Hugging Face decoder, None for our own."""
        return DECODERS[self.decoder][1]

    @property
    def injection(self) -> str:
        return "multi_layer" if self.multi_layer else "input_only"

    # ------------------------------------------------------------------ how the tables name it
    @property
    def recipe(self) -> str:
        return recipe_title(self.seg, self.cls)

    @property
    def decoder_label(self) -> str:
        return DECODERS[self.decoder][0]

    def row_key(self) -> tuple:
        """What identifies a Table 5 row (see `table5_key`)."""
        return table5_key(self.seg, self.cls, self.multi_layer, self.frozen, self.reference_stage, self.decoder)


def table5_key(seg: str | None, cls: bool, sc: bool, frz: bool, ref_stage: int, decoder: str) -> tuple:
    """A Table 5 row is its recipe, SC, Frz, the encoder stage of its visual tokens (-1 = the deepest: 384
    tokens at the paper's grid) and its decoder; the same key matches our experiment to the paper's row."""
    return (seg, bool(cls), bool(sc), bool(frz), int(ref_stage), decoder)


@dataclass(frozen=True)
class Stage2Run:
    """One Table 4 row: Stage 2 from the Stage 1 encoder of `seg` (None: a random encoder)."""

    seg: str | None

    @property
    def name(self) -> str:
        return stage2_name(self.seg)

    def dir(self, dataset: str) -> str:
        return stage2_dir(dataset, self.seg)

    @property
    def title(self) -> str:
        """Table 4's name: 'None Cls', 'Seg(C) Cls', ..."""
        return f"{GRANULARITY_TITLES[self.seg] if self.seg else 'None'} Cls"


def experiment(cfg: dict, name: str) -> Experiment:
    """One configured experiment (reads only its own entry, the encoder and the grid: a Stage 3 job's
    inputs, so that editing another experiment leaves it alone)."""
    return Experiment.from_config(name, cfg["experiments"][name], cfg["encoder"], cfg["preprocess"]["grid"])


def experiments(cfg: dict) -> dict[str, Experiment]:
    """Every configured experiment, checked (ExperimentError names the experiment and the key)."""
    grid = cfg["preprocess"]["grid"]
    return {name: Experiment.from_config(name, entry, cfg["encoder"], grid)
            for name, entry in cfg["experiments"].items()}


@dataclass(frozen=True)
class Plan:
    """What `snakemake all` builds on one dataset: the experiments in `run` (Table 5), the Stage 2 runs they
    use plus those listed in `stage2_runs` (Table 4), and the Stage 1 models all of these start from. `cfg` is
    the dataset's view of the config (uvlm.config.dataset_view)."""

    experiments: tuple[Experiment, ...]
    stage2: tuple[Stage2Run, ...]
    stage1: tuple[str, ...]
    dataset: str = "ct_rate"

    @classmethod
    def from_config(cls, cfg: dict, dataset: str = "ct_rate") -> Plan:
        exps = experiments(cfg)
        run = tuple(exps[n] for n in cfg["run"])
        listed = [stage1_seg(s) for s in cfg.get("stage2_runs", [])]
        segs = {e.seg for e in run if e.cls} | set(listed)
        stage2 = tuple(Stage2Run(s) for s in sorted(segs, key=lambda s: (s is not None, s or "")))
        stage1 = tuple(sorted({e.seg for e in run if e.seg} | {s.seg for s in stage2 if s.seg}))
        return cls(run, stage2, stage1, dataset)

    @property
    def stage1_dirs(self) -> list[str]:
        return [stage1_dir(self.dataset, g) for g in self.stage1]

    @property
    def stage2_dirs(self) -> list[str]:
        return [s.dir(self.dataset) for s in self.stage2]

    @property
    def model_dirs(self) -> list[str]:
        dirs = {d for e in self.experiments for d in e.model_dirs(self.dataset)} | set(self.stage2_dirs)
        return sorted(dirs | set(self.stage1_dirs))

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experiments]
