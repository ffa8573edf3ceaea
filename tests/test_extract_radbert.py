"""RadBertExtractor on a tiny RoBERTa and tokenizer built here (no download), against a manual computation:
raw `tokenizers` encoding, the encoder run one text at a time, the head applied with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

from uvlm.constants import CT_RATE_LABELS
from uvlm.evaluation.extract_radbert import RadBertExtractor

CORPUS = [
    "no pleural effusion",
    "there is cardiomegaly and mild pericardial effusion",
    "emphysema in both lungs with bronchiectasis",
    "a lung nodule in the right upper lobe",
    "atelectasis and consolidation in the left lower lobe",
    "hiatal hernia is seen",
    "arterial wall calcification and coronary artery wall calcification",
    "mediastinal lymphadenopathy , interlobular septal thickening",
]
HIDDEN, N_LABELS, MAX_POSITIONS = 16, len(CT_RATE_LABELS), 514  # 512 tokens, as RoBERTa


def build_encoder(folder: Path, with_pooler: bool = True) -> None:
    """Tiny word-level tokenizer with RoBERTa's special tokens and template, and a tiny RoBERTa encoder."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                             special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>",
                            sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                            mask_token="<mask>").save_pretrained(folder)
    config = RobertaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=HIDDEN, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=MAX_POSITIONS,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           initializer_range=0.5)  # large weights: texts give clearly different features
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=with_pooler).save_pretrained(folder)


def manual_features(folder: Path, texts: list[str], pooling: str, max_tokens: int = 512) -> np.ndarray:
    """Encoder features per text: encoded alone (no padding), pooler computed from the saved weights."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_tokens)
    model = RobertaModel.from_pretrained(folder, add_pooling_layer=False).eval()
    weights = load_file(str(folder / "model.safetensors"))
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids])
            first = model(input_ids=ids).last_hidden_state[0, 0].numpy().astype(np.float64)
            if pooling == "pooler":
                w, b = weights["pooler.dense.weight"].numpy(), weights["pooler.dense.bias"].numpy()
                first = np.tanh(w @ first + b)
            rows.append(first)
    return np.array(rows)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("radbert")
    build_encoder(folder)
    return folder


def write_head(folder: Path, pooling: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random head whose bias puts each label's threshold halfway between the two middle logits of CORPUS,
    so every label is positive for half the texts, with a margin."""
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(N_LABELS, HIDDEN))
    raw = manual_features(folder, CORPUS, pooling) @ weight.T
    middle = np.sort(raw, axis=0)[len(CORPUS) // 2 - 1: len(CORPUS) // 2 + 1]
    bias = -middle.mean(axis=0)
    assert np.abs(raw + bias).min() > 1e-4  # no logit near the threshold
    save_file({"weight": torch.tensor(weight, dtype=torch.float32), "bias": torch.tensor(bias, dtype=torch.float32)},
              str(path or folder / "classifier.safetensors"))
    return weight.astype(np.float32).astype(np.float64), bias.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("pooling", ["pooler", "cls"])
def test_extract_equals_manual_computation(model_dir: Path, tmp_path: Path, pooling: str) -> None:
    head = tmp_path / "head.safetensors"
    weight, bias = write_head(model_dir, pooling, head)
    expected = 1 / (1 + np.exp(-(manual_features(model_dir, CORPUS, pooling) @ weight.T + bias)))
    extractor = RadBertExtractor(model_dir, head_file=head, pooling=pooling)
    np.testing.assert_allclose(extractor.probabilities(CORPUS), expected, atol=1e-5)
    labels = extractor.extract(CORPUS)
    assert labels.dtype == np.int8 and labels.shape == (len(CORPUS), N_LABELS)
    np.testing.assert_array_equal(labels, (expected >= 0.5).astype(np.int8))
    assert (labels.sum(axis=0) == len(CORPUS) // 2).all()


def test_head_in_folder_and_batch_invariance(model_dir: Path) -> None:
    write_head(model_dir, "pooler")
    one = RadBertExtractor(model_dir, batch_size=1)
    eight = RadBertExtractor(model_dir, batch_size=8)
    texts = CORPUS[::-1] + ["", "effusion"] + CORPUS  # mixed lengths, so batches are padded
    np.testing.assert_allclose(one.probabilities(texts), eight.probabilities(texts), atol=1e-5)
    np.testing.assert_array_equal(one.extract(texts), eight.extract(texts))
    assert one.extract([]).shape == (0, N_LABELS)


def test_long_text_is_truncated_to_max_tokens(model_dir: Path) -> None:
    write_head(model_dir, "pooler")
    words = " ".join(CORPUS).split() * 30
    long_text = " ".join(words)  # ~1200 tokens, beyond the encoder's 512 positions
    for max_tokens in (32, 512):
        extractor = RadBertExtractor(model_dir, max_tokens=max_tokens)
        # Truncation keeps <s>, the first max_tokens - 2 words and </s>.
        np.testing.assert_allclose(extractor.probabilities([long_text, "no"]),
                                   extractor.probabilities([" ".join(words[:max_tokens - 2]), "no"]), atol=1e-5)
    with pytest.raises(ValueError, match="max_tokens=513 exceeds the encoder's 512 positions"):
        RadBertExtractor(model_dir, max_tokens=513)


def test_wrong_head_gives_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(5, HIDDEN), "bias": torch.zeros(5)}, str(wrong))
    with pytest.raises(ValueError, match=r"wrong\.safetensors: 'weight' has shape \(5, 16\), expected \(18, 16\)"):
        RadBertExtractor(model_dir, head_file=wrong)
    assert RadBertExtractor(model_dir, head_file=wrong, labels=list("abcde")).extract(["no"]).shape == (1, 5)
    pickled = tmp_path / "head.pt"
    torch.save({"weight": torch.zeros(18, HIDDEN), "bias": torch.zeros(18)}, pickled)
    with pytest.raises(ValueError, match="not a safetensors file"):
        RadBertExtractor(model_dir, head_file=pickled)
    with pytest.raises(FileNotFoundError, match="classifier head not found"):
        RadBertExtractor(model_dir, head_file=tmp_path / "absent.safetensors")


def test_missing_pooler_is_refused(tmp_path: Path) -> None:
    build_encoder(tmp_path, with_pooler=False)
    write_head(tmp_path, "cls")
    with pytest.raises(ValueError, match="no trained pooler weights"):
        RadBertExtractor(tmp_path)
    assert RadBertExtractor(tmp_path, pooling="cls").extract(CORPUS).sum() == N_LABELS * len(CORPUS) // 2
