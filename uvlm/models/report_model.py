"""Stage 3 report generator: encoder -> multi-layer visual injection -> language decoder.

Sequence layout (positions along the decoder's time axis):

    0            1 .. N                N+1          N+2   N+3 ...
    vision_start visual placeholders   vision_end | bos   text ... eos  pad ...
    \\_______ vision block (N + 2), bidirectional ______/ \\__ text, causal ________/

The visual positions hold the projected reference stage (row-major D, H, W), as in the authors' code;
with skip-connection injection the mapped stages are also added at positions 1..N inside their
decoder layers (``uvlm.models.injection``). Positions come from RoPE over the whole sequence.
``input_ids`` always means the text part: [bos, text..., eos, pad...], right-padded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uvlm.models.decoder import Decoder, DecoderConfig, KVCache, hybrid_attention_mask
from uvlm.models.decoding import DecodingConfig, beam_search, greedy_or_sample
from uvlm.models.injection import InjectionConfig, VisualFeatures, VisualInjector
from uvlm.models.static_decoding import StaticStepper, StepperPool


@dataclass
class ReportModelConfig:
    decoder: DecoderConfig
    injection: InjectionConfig
    n_visual_tokens: int  # D*H*W of the reference stage at the configured input size (384 at paper scale)
    freeze_encoder: bool = True
    # Special ids; defaults are what ``uvlm.text.tokenizer.train_bpe`` assigns (SpecialIds.from_tokenizer).
    vision_start_id: int = 4
    vision_end_id: int = 5
    bos_id: int = 2
    eos_id: int = 3
    pad_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored next to model.safetensors as config.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportModelConfig:
        d = dict(d)
        return cls(decoder=DecoderConfig(**d.pop("decoder")), injection=InjectionConfig.from_dict(d.pop("injection")),
                   **d)


# What a report is generated from: volumes (B, 1, D, H, W), or a frozen encoder's stored features of them,
# {stage: (B, N, C_s)} (uvlm.train.feature_cache).
Visual = Tensor | dict[int, Tensor]


def batch_size_and_device(images: Visual) -> tuple[int, torch.device]:
    first = next(iter(images.values())) if isinstance(images, dict) else images
    return first.shape[0], first.device


class VisualSide(nn.Module):
    """What both report generators (ours and the Hugging Face one) share: the encoder, frozen or not,
    the injector and where the visual tokens sit. Subclasses set config (n_visual_tokens,
    freeze_encoder), encoder and injector."""

    @property
    def n_vision_block(self) -> int:
        """vision_start + N visual tokens + vision_end."""
        return self.config.n_visual_tokens + 2

    @property
    def vis_slice(self) -> slice:
        return slice(1, 1 + self.config.n_visual_tokens)

    def train(self, mode: bool = True) -> VisualSide:
        super().train(mode)
        if self.config.freeze_encoder:  # a frozen encoder stays in eval mode
            self.encoder.eval()
        return self

    def encode(self, images: Visual | None, aligned: dict[int, Tensor] | None = None) -> VisualFeatures:
        """images: (B, 1, D, H, W) -> visual tokens (B, N, dim) and {decoder layer: (B, N, dim)} to inject.

        aligned: the encoder's stages aligned to the reference stage, {stage: (B, N, C_s)}, computed beforehand
        (a frozen encoder's cached features, uvlm.train.feature_cache); then images is not read. Passed as
        `images`, they stand for the volumes too (what generation from stored features does)."""
        if isinstance(images, dict):
            images, aligned = None, images
        if aligned is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
                skips = self.encoder(images)  # shallow -> deep, (B, C_s, D_s, H_s, W_s)
            ref = skips[self.injector.ref_stage]
            n_ref = ref.shape[2] * ref.shape[3] * ref.shape[4]
            if n_ref != self.config.n_visual_tokens:
                raise ValueError(
                    f"reference stage has {n_ref} tokens {tuple(ref.shape[2:])}, "
                    f"config.n_visual_tokens = {self.config.n_visual_tokens}: input size does not match the config"
                )
            return self.injector(skips)
        n_ref = aligned[self.injector.ref_stage].shape[1]
        if n_ref != self.config.n_visual_tokens:
            raise ValueError(f"cached features have {n_ref} visual tokens, config.n_visual_tokens = "
                             f"{self.config.n_visual_tokens}: they were made for another experiment")
        return self.injector.project(aligned)


class ReportGenerator(VisualSide):
    """encoder (e.g. ``ResidualEncoderUNet(...).encoder``) + VisualInjector + Decoder."""

    def __init__(self, config: ReportModelConfig, encoder: nn.Module) -> None:
        super().__init__()
        if config.injection.lm_dim != config.decoder.dim:
            raise ValueError(f"injection.lm_dim {config.injection.lm_dim} != decoder.dim {config.decoder.dim}")
        self.config = config
        self.encoder = encoder
        self.injector = VisualInjector(config.injection, config.decoder.n_layers)
        self.decoder = Decoder(config.decoder)
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def _vision_block(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, dim) -> (B, N + 2, dim): [vision_start, visual tokens, vision_end] embeddings."""
        emb = self.decoder.tok_emb
        ids = torch.tensor([self.config.vision_start_id, self.config.vision_end_id], device=emb.weight.device)
        marks = emb(ids).unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, 2, dim)
        return torch.cat([marks[:, :1], tokens.to(marks.dtype), marks[:, 1:]], dim=1)

    def _inputs(self, tokens: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Embeddings (B, L, dim) and bool mask (L, L) or (B, 1, L, L) for vision block + text."""
        b, t = input_ids.shape
        nv = self.n_vision_block
        x = torch.cat([self._vision_block(tokens), self.decoder.tok_emb(input_ids)], dim=1)  # (B, nv+T, dim)
        mask = hybrid_attention_mask(nv, t, device=input_ids.device)  # (L, L)
        if attention_mask is not None and not bool(attention_mask.all()):
            # Key padding on top of the hybrid mask. With right padding this changes nothing for
            # real tokens (causality already hides later pads); it matters only for left padding.
            keys = torch.cat([attention_mask.new_ones(b, nv, dtype=torch.bool), attention_mask.bool()], 1)
            mask = mask & keys[:, None, None, :]  # (B, 1, L, L); vision keys keep every row non-empty
        return x, mask

    def _text_logits(self, visual: VisualFeatures, input_ids: Tensor,
                     attention_mask: Tensor | None = None) -> Tensor:
        x, mask = self._inputs(visual.tokens, input_ids, attention_mask)
        h = self.decoder(x, mask, visual.injected, self.vis_slice)  # (B, L, dim)
        return self.decoder.lm_head(h[:, self.n_vision_block:])  # (B, T, V)

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None = None,
                aligned: dict[int, Tensor] | None = None) -> Tensor:
        """Logits (B, T, V) at the text positions; logits[:, t] predict input_ids[:, t + 1].

        input_ids: (B, T) = [bos, text..., eos, pad...]; attention_mask: (B, T), 1 = real token,
        default ``input_ids != pad_id``; aligned: precomputed encoder stages instead of images (see encode).
        """
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        return self._text_logits(self.encode(images, aligned), input_ids, attention_mask)

    def loss(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None = None,
             aligned: dict[int, Tensor] | None = None) -> Tensor:
        """Mean next-token cross-entropy over real text targets (pads ignored, bos never a target)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        logits = self(images, input_ids, attention_mask, aligned)  # (B, T, V)
        targets = input_ids[:, 1:].masked_fill(~attention_mask[:, 1:].bool(), -100)  # (B, T-1)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    # ---------------------------------------------------------------- incremental decoding
    def prefill(self, images: Visual, prompt_ids: Tensor, max_len: int) -> tuple[Tensor, KVCache]:
        """Run [vision block + prompt_ids (B, T)] with the hybrid mask into a fresh KV cache
        of ``max_len`` positions; returns prompt logits (B, T, V) and the cache."""
        visual = self.encode(images)
        x, mask = self._inputs(visual.tokens, prompt_ids, None)
        cache = KVCache(self.config.decoder, x.shape[0], max_len, x.device, x.dtype)
        h = self.decoder(x, mask, visual.injected, self.vis_slice, cache=cache)
        return self.decoder.lm_head(h[:, self.n_vision_block:]), cache

    def decode_step(self, token_ids: Tensor, cache: KVCache) -> Tensor:
        """token_ids: (B, 1), the newest token; attends to the whole cache. Returns logits (B, V)."""
        h = self.decoder(self.decoder.tok_emb(token_ids), None, cache=cache)  # (B, 1, dim)
        return self.decoder.lm_head(h[:, -1])

    @torch.no_grad()
    def generate(self, images: Visual, max_new_tokens: int | None = None, use_cache: bool = True,
                 decoding: DecodingConfig | None = None) -> list[list[int]]:
        """Decode a report per image (or per volume's stored features) after [vision block, bos]; greedy unless
        ``decoding`` says otherwise.

        Returns per image the generated ids without bos and eos, cut at the first eos.
        ``max_new_tokens``, when given, overrides ``decoding.max_new_tokens``. Call ``model.eval()``
        first if dropout > 0. ``use_cache=False`` recomputes the full sequence each step (reference
        for tests); both paths pick the same tokens up to float rounding. ``decoding.static_cache`` swaps the
        dynamic cache for a fixed-shape one, optionally compiled (``uvlm.models.static_decoding``).
        """
        cfg = decoding or DecodingConfig()
        if max_new_tokens is not None:
            cfg = replace(cfg, max_new_tokens=max_new_tokens)
        if cfg.static_cache != "none" and not use_cache:
            raise ValueError(f"static_cache={cfg.static_cache!r} needs use_cache=True")
        if cfg.max_new_tokens == 0:
            return [[] for _ in range(batch_size_and_device(images)[0])]
        beams = cfg.num_beams if cfg.strategy == "beam" else 1
        rows = _TextRows(self, images, beams, cfg.max_new_tokens, use_cache, cfg.static_cache)
        if cfg.strategy == "beam":
            return beam_search(rows.first_logits, rows.advance, cfg, self.config.eos_id)
        return greedy_or_sample(rows.first_logits, rows.advance, cfg, self.config.eos_id, self.config.pad_id)


class _TextRows:
    """Next-token logits for R = B * expand text rows that grow by one token per step.

    Row r belongs to image r // expand. The vision block and bos are run once per image; with the
    cache, the prefilled cache is then expanded to R rows, without it the injected features are.
    ``advance`` reorders the rows' state by ``parents`` (beam search) before appending the tokens.
    With ``static`` ("eager" | "compile"), the prefilled cache is copied into a fixed-shape one of
    R rows kept on the model between calls (a compiled step is recorded once per shape).
    """

    def __init__(self, model: ReportGenerator, images: Visual, expand: int, max_new_tokens: int,
                 use_cache: bool, static: str = "none") -> None:
        self.model = model
        self.cache: KVCache | None = None
        self.static: StaticStepper | None = None
        b, device = batch_size_and_device(images)
        bos = torch.full((b, 1), model.config.bos_id, dtype=torch.long, device=device)  # (B, 1)
        if use_cache and static != "none":
            logits, cache = model.prefill(images, bos, max_len=model.n_vision_block + 1)
            pool = model.__dict__.setdefault("_static_steppers", StepperPool())
            self.static = pool.get(model.decoder, b * expand, model.n_vision_block + max_new_tokens,
                                   device, cache.k[0].dtype, static == "compile")
            self.static.cache.load(cache, torch.arange(b, device=device).repeat_interleave(expand)
                                   if expand > 1 else None)
        elif use_cache:
            logits, self.cache = model.prefill(images, bos, max_len=model.n_vision_block + max_new_tokens)
            if expand > 1:
                self.cache.select(torch.arange(b, device=device).repeat_interleave(expand))
        else:
            visual = model.encode(images)  # tokens and {layer: (B, N, dim)}
            logits = model._text_logits(visual, bos)  # (B, 1, V)
            self.visual = VisualFeatures(visual.tokens.repeat_interleave(expand, dim=0),  # (R, N, dim)
                                         {i: f.repeat_interleave(expand, dim=0) for i, f in visual.injected.items()})
        self.ids = bos.repeat_interleave(expand, dim=0)  # (R, 1) text so far (used without the cache)
        self.first_logits = logits[:, -1].repeat_interleave(expand, dim=0)  # (R, V)

    def advance(self, tokens: Tensor, parents: Tensor | None) -> Tensor:
        """tokens (R,), parents (R,) | None -> logits (R, V) for the next position."""
        if self.static is not None:
            if parents is not None:
                self.static.cache.select(parents)
            return self.static(tokens[:, None])
        if self.cache is not None:
            if parents is not None:
                self.cache.select(parents)
            return self.model.decode_step(tokens[:, None], self.cache)
        ids = self.ids if parents is None else self.ids[parents]
        self.ids = torch.cat([ids, tokens[:, None]], dim=1)  # (R, T + 1)
        return self.model._text_logits(self.visual, self.ids)[:, -1]
