"""Byte-level BPE: exact round trip, distinct special ids, atomic save, ids match the model defaults."""

from __future__ import annotations

from pathlib import Path

from uvlm.models.report_model import ReportModelConfig
from uvlm.text.tokenizer import SpecialIds, encode_report, load_tokenizer, train_bpe

REPORTS = [
    "Findings: No pleural effusion. Heart size is normal.",
    "Impressions: Bilateral ground-glass opacities, most prominent in the lower lobes.",
    "A 4 mm nodule in the right upper lobe (series 3, image 45).\nNo lymphadenopathy.",
    "Mild  emphysema;   coronary artery calcification.\tTrachea is midline.",
]


def test_round_trip_and_special_ids(tmp_path: Path) -> None:
    out = tmp_path / "tok" / "tokenizer.json"
    tok = train_bpe(REPORTS * 5, vocab_size=400, out_path=out)
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["tokenizer.json"]  # no tmp left
    loaded = load_tokenizer(out.parent)
    for t in [*REPORTS, "Unseen words: bronchiectasis, 12.5 cm; x-ray?"]:
        assert tok.decode(tok.encode(t).ids) == t
        assert loaded.decode(loaded.encode(t).ids) == t
    ids = SpecialIds.from_tokenizer(loaded)
    values = list(vars(ids).values())
    assert len(set(values)) == len(values) == 6
    defaults = ReportModelConfig.__dataclass_fields__
    for name, value in ids.model_kwargs().items():
        assert defaults[name].default == value
    seq = encode_report(loaded, REPORTS[0])
    assert seq[0] == ids.bos_id and seq[-1] == ids.eos_id
    assert loaded.decode(seq) == REPORTS[0]  # specials skipped on decode
    assert encode_report(loaded, REPORTS[0], max_len=3)[-1] != ids.eos_id


def test_hugging_face_tokenizer_folder_gets_our_special_tokens(tmp_path: Path) -> None:
    """A tokenizer.json without our special tokens (like Qwen3's) gains them at the next free ids;
    reports encode with bos/eos and decode back exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from uvlm.text.tokenizer import SPECIAL_TOKENS, SpecialIds, encode_report, from_hf_folder

    hf = Tokenizer(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(["No pleural effusion.", "Cardiomegaly."] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["[UNK]", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    (tmp_path / "qwen").mkdir()
    hf.save(str(tmp_path / "qwen" / "tokenizer.json"))
    n = hf.get_vocab_size()
    tok = from_hf_folder(tmp_path / "qwen", tmp_path / "out" / "tokenizer.json")
    ids = SpecialIds.from_tokenizer(tok)
    assert ids.eos_id == hf.token_to_id("<eos>")  # an existing token keeps its id
    assert tok.get_vocab_size() == n + len(SPECIAL_TOKENS) - 1
    seq = encode_report(tok, "No pleural effusion.")
    assert seq[0] == ids.bos_id and seq[-1] == ids.eos_id
    assert tok.decode(seq[1:-1]) == "No pleural effusion."
