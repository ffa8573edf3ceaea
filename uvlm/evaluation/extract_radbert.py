"""CT-RATE's text classifier as a label extractor, for users who have its weights.

CT-RATE's labels were extracted from reports by a RadBERT-RoBERTa-4m encoder with a linear head,
sigmoid >= 0.5, at most 512 tokens (REFERENCE.md section 3). Its weights are not public, so this
backend runs only on files the user already has; nothing is downloaded (local_files_only=True):

- `model_dir`: a transformers folder (config.json, encoder weights, tokenizer files) of the
  fine-tuned encoder;
- the head: `classifier.safetensors` in `model_dir` or `head_file`, with `weight` (labels x hidden)
  and `bias` (labels). Safetensors only: a pickled checkpoint can run code when loaded.

Pooling: CT-CLIP's `RadBertClassifier` applies its head to the encoder's pooler output
(tanh(dense(hidden state of <s>))), so `pooling="pooler"` (default) does the same and refuses an
encoder whose pooler weights are missing (transformers would initialise them at random);
`pooling="cls"` applies the head to the raw <s> hidden state instead.

Converting CT-CLIP's `.pth` (a pickled state dict of the whole module: `model.*` and `classifier.*`)
is a one-off step for the user, on a file they trust, roughly:

    state = torch.load("classifier.pth", map_location="cpu")
    encoder = AutoModel.from_pretrained(radbert_dir)  # RadBERT-RoBERTa-4m config and tokenizer
    encoder.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    encoder.save_pretrained(out_dir); AutoTokenizer.from_pretrained(radbert_dir).save_pretrained(out_dir)
    save_file({"weight": state["classifier.weight"], "bias": state["classifier.bias"]},
              f"{out_dir}/classifier.safetensors")

Texts longer than `max_tokens` tokens (special tokens included) are truncated: findings past that
point cannot produce labels, as in CT-RATE's own extraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from uvlm.constants import CT_RATE_LABELS

HEAD_FILE = "classifier.safetensors"


def load_head(path: str | Path, n_labels: int, hidden_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a linear head (weight, bias) from safetensors and check its shapes against the encoder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier head not found: {path} (a safetensors file with 'weight' and 'bias')")
    try:
        tensors = load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors file ({err}); pickled checkpoints are not loaded") from err
    missing = {"weight", "bias"} - tensors.keys()
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}; it has {sorted(tensors)}")
    expected = {"weight": (n_labels, hidden_size), "bias": (n_labels,)}
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: '{key}' has shape {tuple(tensors[key].shape)}, expected {shape} "
                             f"({n_labels} labels, encoder hidden size {hidden_size})")
    return tensors["weight"].float(), tensors["bias"].float()


class RadBertExtractor:
    """Multi-label extractor: encoder + linear head on the first token, sigmoid >= threshold."""

    def __init__(self, model_dir: str | Path, head_file: str | Path | None = None,
                 labels: Sequence[str] = CT_RATE_LABELS, threshold: float = 0.5, max_tokens: int = 512,
                 device: str | torch.device = "cpu", batch_size: int = 16,
                 pooling: Literal["pooler", "cls"] = "pooler") -> None:
        if pooling not in ("pooler", "cls"):
            raise ValueError(f"pooling must be 'pooler' or 'cls', not {pooling!r}")
        self.labels, self.threshold, self.batch_size = tuple(labels), threshold, batch_size
        self.max_tokens, self.pooling, self.device = max_tokens, pooling, torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.encoder, info = AutoModel.from_pretrained(model_dir, local_files_only=True, output_loading_info=True)
        if pooling == "pooler" and (getattr(self.encoder, "pooler", None) is None
                                    or any(k.startswith("pooler.") for k in info["missing_keys"])):
            raise ValueError(f"{model_dir}: the encoder has no trained pooler weights; CT-CLIP's head reads "
                             "the pooler output. Use pooling='cls' only if the head was trained on the <s> state")
        config = self.encoder.config
        # RoBERTa numbers positions from pad_token_id + 1, so 514 position embeddings hold 512 tokens.
        offset = config.pad_token_id + 1 if "roberta" in config.model_type else 0
        if max_tokens > config.max_position_embeddings - offset:
            raise ValueError(f"max_tokens={max_tokens} exceeds the encoder's "
                             f"{config.max_position_embeddings - offset} positions")
        weight, bias = load_head(head_file or Path(model_dir) / HEAD_FILE, len(self.labels), config.hidden_size)
        self.encoder.to(self.device).eval()
        self.weight, self.bias = weight.to(self.device), bias.to(self.device)

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid of the head's logits, (N, L) float32; useful for AUCs or another threshold."""
        out = [np.zeros((0, len(self.labels)), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)
            encoded = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            features = encoded.pooler_output if self.pooling == "pooler" else encoded.last_hidden_state[:, 0]
            logits = features.float() @ self.weight.T + self.bias
            out.append(torch.sigmoid(logits).cpu().numpy())
        return np.concatenate(out)

    def extract(self, texts: Sequence[str]) -> np.ndarray:
        """Labels (N, L) int8, columns in `labels` order: 1 where the probability >= threshold."""
        return (self.probabilities(texts) >= self.threshold).astype(np.int8)
