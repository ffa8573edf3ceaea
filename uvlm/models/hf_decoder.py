"""Stage 3 with a Hugging Face causal LM (Qwen3 in the paper's ablation) instead of our own decoder.

Same sequence layout, hybrid mask, injection and public methods as ``ReportGenerator``:

    [vision_start, N visual tokens, vision_end | bos, text..., eos, pad...]

The vision block is not made of token ids: vision_start / vision_end are parameters of this wrapper and
the visual tokens are the projected reference stage, fed with the LM's own embeddings of the text ids as
``inputs_embeds``. The hybrid mask goes in as a 4-D mask (bool for sdpa, additive float for eager), which
transformers hands to the attention kernel as is; flash attention cannot take it. Skip-connection
injection adds the projected stage features at the visual positions through forward hooks on the
mapped layers' attention modules: the attention output is added to the residual stream, so adding the
features to it is adding them after the attention and before the MLP, where our own decoder adds them.
Which features a layer adds is set by a pre-hook on the layer itself: transformers 5 checkpoints a layer's
``forward`` rather than ``__call__``, so that pre-hook runs once per forward, outside gradient
checkpointing, and a recomputation in the backward pass adds the same features again. The LM is built from
a local folder only (never the hub).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from uvlm.models.decoder import hybrid_attention_mask
from uvlm.models.injection import InjectionConfig, VisualFeatures, VisualInjector
from uvlm.models.report_model import Visual, VisualSide, batch_size_and_device

QWEN3_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class HFDecoderConfig:
    model_dir: str  # local folder with config.json (+ weights unless from_scratch, + tokenizer files)
    from_scratch: bool = False  # random init from config.json instead of loading weights
    finetune: str = "lora"  # "lora" | "full"
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    # the authors' Qwen3 variant adapts the attention projections (q, k, v, o)
    lora_target_modules: list[str] = field(default_factory=lambda: list(QWEN3_PROJECTIONS[:4]))
    gradient_checkpointing: bool = False
    dtype: str = "float32"  # LM weights: "float32" | "bfloat16"; wrapper params stay float32
    attn_implementation: str = "sdpa"  # "sdpa" | "eager": both take the 4-D hybrid mask
    vocab_size: int | None = None  # from_scratch only: override config.json (e.g. our BPE tokenizer's size)


@dataclass
class HFReportModelConfig:
    decoder: HFDecoderConfig
    injection: InjectionConfig  # lm_dim = the LM's hidden_size
    n_visual_tokens: int
    bos_id: int
    eos_id: int
    pad_id: int  # may equal eos_id (tokenizers without a pad token); the loss mask handles it
    freeze_encoder: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HFReportModelConfig:
        d = dict(d)
        return cls(decoder=HFDecoderConfig(**d.pop("decoder")), injection=InjectionConfig.from_dict(d.pop("injection")),
                   **d)


# ------------------------------------------------------------------------------------ tokenizer
@dataclass(frozen=True)
class HFSpecialIds:
    bos_id: int
    eos_id: int
    pad_id: int

    def model_kwargs(self) -> dict[str, int]:
        """The ids ``HFReportModelConfig`` takes."""
        return asdict(self)


def load_hf_tokenizer(model_dir: str | Path) -> Any:
    """``AutoTokenizer`` from the local folder (no hub lookup)."""
    return AutoTokenizer.from_pretrained(str(_local_dir(model_dir)), local_files_only=True)


def special_ids(tok: Any) -> HFSpecialIds:
    """bos/eos/pad for an HF tokenizer or our BPE ``tokenizers.Tokenizer``.

    Qwen tokenizers have no bos and some have no pad: both fall back to eos. A bos equal to eos is
    harmless (bos is never a target) and the loss finds the real eos by position, not by id."""
    from tokenizers import Tokenizer

    if isinstance(tok, Tokenizer):  # our BPE: the model ignores its vision_start/end ids (learned params)
        from uvlm.text.tokenizer import SpecialIds

        s = SpecialIds.from_tokenizer(tok)
        return HFSpecialIds(s.bos_id, s.eos_id, s.pad_id)
    if tok.eos_token_id is None:
        raise ValueError("tokenizer has no eos token")
    eos = int(tok.eos_token_id)
    bos = eos if tok.bos_token_id is None else int(tok.bos_token_id)
    pad = eos if tok.pad_token_id is None else int(tok.pad_token_id)
    return HFSpecialIds(bos, eos, pad)


def encode_text(tok: Any, text: str, ids: HFSpecialIds, max_len: int | None = None) -> list[int]:
    """[bos, text ids..., eos] for an HF or our BPE tokenizer, cut like ``encode_report``."""
    from tokenizers import Tokenizer

    from uvlm.text.tokenizer import frame_report

    body = tok.encode(text, add_special_tokens=False)
    body = body.ids if isinstance(tok, Tokenizer) else list(body)
    return frame_report(body, ids.bos_id, ids.eos_id, max_len)


# ------------------------------------------------------------------------------------ the LM
def _local_dir(model_dir: str | Path) -> Path:
    d = Path(model_dir)
    if not (d / "config.json").is_file():  # never let a typo turn into a hub download
        raise FileNotFoundError(f"{d}/config.json not found (models load from a local folder only)")
    return d


def build_lm(cfg: HFDecoderConfig) -> nn.Module:
    """The causal LM from the local folder, LoRA-wrapped (``PeftModel``) or fully trainable."""
    if cfg.finetune not in ("lora", "full"):
        raise ValueError(f"finetune must be 'lora' or 'full', got {cfg.finetune!r}")
    if cfg.attn_implementation not in ("sdpa", "eager"):
        raise ValueError("attn_implementation must be 'sdpa' or 'eager' (the hybrid mask is a 4-D tensor)")
    d = _local_dir(cfg.model_dir)
    kw = {"dtype": DTYPES[cfg.dtype], "attn_implementation": cfg.attn_implementation}
    if cfg.from_scratch:
        hf_cfg = AutoConfig.from_pretrained(str(d), local_files_only=True)
        if cfg.vocab_size is not None:
            hf_cfg.vocab_size = cfg.vocab_size
        lm = AutoModelForCausalLM.from_config(hf_cfg, **kw)
    elif cfg.vocab_size is not None:
        raise ValueError("vocab_size overrides only a from_scratch LM (pretrained embeddings fix the vocab)")
    else:
        lm = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True, **kw)
    if cfg.gradient_checkpointing:
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if cfg.finetune == "full":
        return lm.requires_grad_(True)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none")
    return get_peft_model(lm, lora)  # freezes the base, adds trainable lora_A / lora_B


class ParamGroups(NamedTuple):
    lm: list[nn.Parameter]  # trainable LM params: LoRA only, or all for full fine-tuning
    visual: list[nn.Parameter]  # injector projections, vision_start/end
    encoder: list[nn.Parameter]


class HFReportGenerator(VisualSide):
    """encoder + VisualInjector + HF causal LM, with ``ReportGenerator``'s interface."""

    def __init__(self, config: HFReportModelConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.lm = build_lm(config.decoder)
        hf_cfg = self.causal_lm.config
        dim, vocab = hf_cfg.hidden_size, self.causal_lm.get_input_embeddings().num_embeddings
        if config.injection.lm_dim != dim:
            raise ValueError(f"injection.lm_dim {config.injection.lm_dim} != LM hidden_size {dim}")
        bad = {k: v for k, v in (("bos", config.bos_id), ("eos", config.eos_id), ("pad", config.pad_id))
               if not 0 <= v < vocab}
        if bad:
            raise ValueError(f"special ids {bad} outside the LM vocabulary ({vocab})")
        layers = self.causal_lm.model.layers  # decoder layers of a *ForCausalLM (Qwen3, Llama, ...)
        self.injector = VisualInjector(config.injection, len(layers))
        self.vision_marks = nn.Parameter(torch.randn(2, dim) * 0.02)  # vision_start, vision_end
        self._injected: dict[int, Tensor] | None = None  # set only for the duration of a full forward
        self._layer_inject: dict[int, Tensor | None] = {}  # what each layer's attention adds, per forward
        for i in self.injector.layers:
            layers[i].register_forward_pre_hook(partial(self._pick_injection, i))
            layers[i].self_attn.register_forward_hook(partial(self._inject_hook, i))
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The transformers model (LoRA layers live inside it in place)."""
        return self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm

    def trainable_parameter_groups(self) -> ParamGroups:
        """(LM/LoRA, injector + visual, encoder) for separate learning rates in the optimiser."""
        return ParamGroups([p for p in self.lm.parameters() if p.requires_grad],
                           [self.vision_marks, *self.injector.parameters()],
                           list(self.encoder.parameters()))

    def _pick_injection(self, layer: int, module: nn.Module, args: tuple) -> None:
        """Layer pre-hook: this forward's features for the layer (None in cached decoding steps)."""
        self._layer_inject[layer] = None if self._injected is None else self._injected.get(layer)

    def _inject_hook(self, layer: int, module: nn.Module, args: tuple, output: Any) -> Any:
        """Add the layer's visual features at positions 1..N of its attention output (full forwards only)."""
        feats = self._layer_inject.get(layer)
        if feats is None:
            return output
        h = output[0] if isinstance(output, tuple) else output  # (B, L, dim)
        v = self.vis_slice
        h = torch.cat([h[:, :v.start], h[:, v] + feats.to(h.dtype), h[:, v.stop:]], dim=1)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def _embed(self, ids: Tensor) -> Tensor:
        return self.causal_lm.get_input_embeddings()(ids)  # (B, T, dim)

    def _inputs(self, tokens: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """inputs_embeds (B, nv + T, dim) for [vision_start, tokens (B, N, dim), vision_end, text] and the
        hybrid mask (1 or B, 1, L, L): bool for sdpa (True = attend), additive float for eager."""
        b, t = input_ids.shape
        nv = self.n_vision_block
        text = self._embed(input_ids)
        m = self.vision_marks.to(text.dtype)[None].expand(b, -1, -1)  # (B, 2, dim)
        x = torch.cat([m[:, :1], tokens.to(text.dtype), m[:, 1:], text], dim=1)
        allowed = hybrid_attention_mask(nv, t, device=input_ids.device)[None, None]  # (1, 1, L, L)
        if attention_mask is not None and not bool(attention_mask.all()):  # key padding (left padding)
            keys = torch.cat([attention_mask.new_ones(b, nv, dtype=torch.bool), attention_mask.bool()], 1)
            allowed = allowed & keys[:, None, None, :]  # (B, 1, L, L); vision keys keep rows non-empty
        if self.config.decoder.attn_implementation == "sdpa":  # bool: independent of autocast dtypes
            return x, allowed
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)  # eager adds the mask to scores
        return x, mask.masked_fill(~allowed, torch.finfo(x.dtype).min)

    def _run(self, visual: VisualFeatures, input_ids: Tensor, attention_mask: Tensor | None,
             keep: int, use_cache: bool = False) -> Any:
        """LM output for [vision block + input_ids]; logits for the last ``keep`` positions only
        (vision-position logits would cost N x vocab floats per image)."""
        x, mask = self._inputs(visual.tokens, input_ids, attention_mask)
        self._injected = visual.injected
        try:
            return self.causal_lm(inputs_embeds=x, attention_mask=mask, use_cache=use_cache,
                                  logits_to_keep=keep)
        finally:
            self._injected = None

    def real_tokens(self, input_ids: Tensor) -> Tensor:
        """(B, T) bool: real (non-pad) text positions of right-padded [bos, text, eos, pad...].
        When pad shares its id with eos/bos, real = up to and including the first eos after bos."""
        c = self.config
        if c.pad_id not in (c.eos_id, c.bos_id):
            return input_ids != c.pad_id
        is_eos = (input_ids[:, 1:] == c.eos_id).long()
        after_eos = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first eos
        return torch.cat([torch.ones_like(after_eos[:, :1]), ~after_eos], dim=1)

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None = None,
                aligned: dict[int, Tensor] | None = None) -> Tensor:
        """Logits (B, T, V) at the text positions; logits[:, t] predict input_ids[:, t + 1].
        aligned: precomputed encoder stages instead of images (VisualSide.encode)."""
        if attention_mask is None:
            attention_mask = self.real_tokens(input_ids)
        return self._run(self.encode(images, aligned), input_ids, attention_mask, keep=input_ids.shape[1]).logits

    def loss(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None = None,
             aligned: dict[int, Tensor] | None = None) -> Tensor:
        """Mean next-token cross-entropy over real text targets (pads ignored, bos never a target)."""
        if attention_mask is None:
            attention_mask = self.real_tokens(input_ids)
        logits = self(images, input_ids, attention_mask, aligned)  # (B, T, V)
        targets = input_ids[:, 1:].masked_fill(~attention_mask[:, 1:].bool(), -100)  # (B, T-1)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, images: Visual, max_new_tokens: int, use_cache: bool = True) -> list[list[int]]:
        """Greedy decoding after [vision block, bos]; per image the ids without bos/eos, cut at the
        first eos. Call ``eval()`` first (LoRA dropout). ``use_cache=False`` recomputes everything."""
        from uvlm.models.decoding import DecodingConfig, greedy_or_sample

        cfg = self.config
        b, device = batch_size_and_device(images)
        ids = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=device)  # (B, 1)
        visual = self.encode(images)
        out = self._run(visual, ids, None, keep=1, use_cache=use_cache)
        state = {"ids": ids, "cache": out.cache}

        def advance(nxt: Tensor, parents: Tensor | None) -> Tensor:  # nxt: (B,) -> logits (B, V)
            if use_cache:  # one new position; no mask = it sees the whole cache; no injection
                step = self.causal_lm(inputs_embeds=self._embed(nxt[:, None]), cache=state["cache"], use_cache=True)
                state["cache"] = step.cache
                return step.logits[:, -1]
            state["ids"] = torch.cat([state["ids"], nxt[:, None]], dim=1)  # (B, T+1)
            return self._run(visual, state["ids"], None, keep=1).logits[:, -1]

        return greedy_or_sample(out.logits[:, -1], advance, DecodingConfig(max_new_tokens=max_new_tokens),
                                cfg.eos_id, cfg.pad_id)

    # -------------------------------------------------------------------------------- saving
    def _saves_base_weights(self) -> bool:
        """A pretrained base under LoRA is rebuilt from model_dir; a random one must be saved."""
        return self.config.decoder.finetune == "full" or self.config.decoder.from_scratch

    def state_dict_for_save(self) -> dict[str, Tensor]:
        """What a checkpoint needs, as plain tensors for ``safetensors.save_file``: everything but the
        frozen pretrained LM weights under LoRA; tied weights (lm_head = embed_tokens) stored once."""
        keep_lm = None if self._saves_base_weights() else {
            f"lm.{n}" for n, p in self.lm.named_parameters() if p.requires_grad}
        out: dict[str, Tensor] = {}
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for k, v in self.state_dict().items():
            if keep_lm is not None and k.startswith("lm.") and k not in keep_lm:
                continue
            key = (v.untyped_storage().data_ptr(), tuple(v.shape))
            if key in seen:
                continue
            seen.add(key)
            out[k] = v.detach().contiguous()
        return out

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True,
                        assign: bool = False) -> Any:
        """Accepts ``state_dict_for_save()`` output (or a full state dict). ``strict`` checks that every
        saved key is present and no unknown key is given; the LM base comes from model_dir."""
        if strict:
            missing = set(self.state_dict_for_save()) - set(state_dict)
            unexpected = set(state_dict) - set(self.state_dict())
            if missing or unexpected:
                raise RuntimeError(f"missing keys {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)
