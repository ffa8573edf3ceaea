"""Byte-level BPE tokenizer for report text (HF ``tokenizers``), trained on the training reports,
or taken from a Hugging Face tokenizer folder (``from_hf_folder``).

Byte-level pre-tokenisation + decoder makes ``decode(encode(t).ids) == t`` for any text (no
unknown characters, whitespace and newlines preserved), so generated reports compare exactly
with references. The special tokens take the first ids in the order of ``SPECIAL_TOKENS``
(<pad>=0, <unk>=1, <bos>=2, <eos>=3, <vision_start>=4, <vision_end>=5). ``encode`` adds no
bos/eos by itself; ``encode_report`` does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>", "<vision_start>", "<vision_end>")
FILE_NAME = "tokenizer.json"


def _file(path: Path | str) -> Path:
    """A directory means ``<dir>/tokenizer.json``."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() else path


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: Path, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` and save it atomically to ``out_path`` (file or dir)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    _save(tok, out_path)
    return tok


def from_hf_folder(folder: Path | str, out_path: Path) -> Tokenizer:
    """Use a Hugging Face tokenizer folder's ``tokenizer.json`` (e.g. Qwen3's) instead of training one.

    Our special tokens are added where the tokenizer lacks them (they get the next free ids, so the
    vocabulary grows by at most six); the result is saved to ``out_path`` like a trained one.
    """
    src = _file(folder)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no tokenizer.json in the Hugging Face tokenizer folder")
    tok = Tokenizer.from_file(str(src))
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens(missing)
    _save(tok, out_path)
    return tok


def _save(tok: Tokenizer, out_path: Path | str) -> None:
    out = _file(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Atomic write: a reader (or a killed job) never sees a half-written tokenizer.json.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        tok.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load ``tokenizer.json`` (or a directory holding it)."""
    return Tokenizer.from_file(str(_file(path)))


@dataclass(frozen=True)
class SpecialIds:
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int
    vision_start_id: int
    vision_end_id: int

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> SpecialIds:
        ids = []
        for name in SPECIAL_TOKENS:
            i = tok.token_to_id(name)
            if i is None:
                raise ValueError(f"tokenizer lacks special token {name}")
            ids.append(i)
        return cls(*ids)

    def model_kwargs(self) -> dict[str, int]:
        """The ids ``ReportModelConfig`` takes (everything but unk)."""
        d = asdict(self)
        d.pop("unk_id")
        return d


def frame_report(body: list[int], bos_id: int, eos_id: int, max_len: int | None = None) -> list[int]:
    """[bos, body..., eos]; if longer than ``max_len`` the text is cut and no eos is appended, so the
    model is never taught to stop in the middle of a report. Shared by every tokenizer we train with."""
    seq = [bos_id, *body, eos_id]
    return seq if max_len is None or len(seq) <= max_len else seq[:max_len]


def encode_report(tok: Tokenizer, text: str, max_len: int | None = None) -> list[int]:
    """A report as [bos, text ids..., eos] with our BPE tokenizer (see frame_report for the cut)."""
    ids = SpecialIds.from_tokenizer(tok)
    return frame_report(tok.encode(text, add_special_tokens=False).ids, ids.bos_id, ids.eos_id, max_len)
