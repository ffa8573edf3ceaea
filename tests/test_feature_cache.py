"""A frozen encoder's stored features (uvlm.train.feature_cache): exact, keyed on the encoder, shared, atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import DECODER, ENC, FROZEN_SC, GRID, TEXTS, dataset, s3cfg, weights

import uvlm.train.feature_cache as fc
from uvlm.experiments import Experiment
from uvlm.models.encoder import build_encoder, save_encoder
from uvlm.models.injection import align_to_reference
from uvlm.text.tokenizer import train_bpe
from uvlm.train.stage3 import train_stage3

FROZEN_INPUT = Experiment("frz", "Frz", None, False, multi_layer=False, frozen=True)


def test_stored_features_are_the_encoders_aligned_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every volume once (a name in two datasets too), over several chunk files; each row equals the encoder's
    stage pooled to the reference stage's tokens, computed here independently."""
    monkeypatch.setattr(fc, "CHUNK_VOLUMES", 3)
    a, b = dataset(tmp_path / "a", 5), dataset(tmp_path / "b", 2)  # b's names are a's first two
    torch.manual_seed(0)
    enc = build_encoder(ENC).eval()
    meta = fc.write_features(enc, [a, b], -1, tmp_path / "f", torch.device("cpu"), 2, max_gb=1.0)
    assert meta["volumes"] == 5 and meta["tokens"] == 2 * 2 * 2 and meta["channels"] == [4, 8, 8]
    assert meta["bytes_per_volume"] == 8 * (4 + 8 + 8) * 4 and meta["dtype"] == "float32"
    assert sorted(p.name for p in (tmp_path / "f").glob("chunk_*")) == ["chunk_00000.safetensors",
                                                                         "chunk_00001.safetensors"]
    store = fc.FeatureStore(tmp_path / "f")
    store.check(enc, -1)
    view = store.view([a.names[4], a.names[1]])
    got = view.aligned([0, 1], torch.device("cpu"))
    with torch.no_grad():
        skips = enc(torch.stack([a[4]["image"], a[1]["image"]]))
    for s in range(3):
        want = align_to_reference(skips[s], (2, 2, 2))  # (2, 8, C_s)
        torch.testing.assert_close(got[s], want, rtol=1e-5, atol=1e-6)


def test_features_of_another_encoder_or_other_tokens_are_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path / "d", 3)
    torch.manual_seed(0)
    enc = build_encoder(ENC)
    fc.write_features(enc, [data], -1, tmp_path / "f", torch.device("cpu"), 2, max_gb=1.0)
    store = fc.FeatureStore(tmp_path / "f")
    torch.manual_seed(1)
    with pytest.raises(ValueError, match="encoder"):
        store.check(build_encoder(ENC), -1)
    with pytest.raises(ValueError, match="reference stage 1"):
        store.check(enc, -2)
    with pytest.raises(KeyError, match="no features for 1 volumes"):
        store.view(["valid_9_a_1"])


def test_over_budget_features_leave_only_their_size(tmp_path: Path) -> None:
    data = dataset(tmp_path / "d", 3)
    meta = fc.write_features(build_encoder(ENC), [data], -1, tmp_path / "f", torch.device("cpu"), 2, max_gb=1e-9)
    assert not meta["stored"] and meta["gb"] > 1e-9 and "feature_cache_gb" in meta["reason"]
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["features.json"]
    assert not fc.FeatureStore(tmp_path / "f").usable
    meta = fc.write_features(build_encoder(ENC), [data], -1, tmp_path / "g", torch.device("cpu"), 2, max_gb=0.0)
    assert not meta["stored"] and meta["reason"] == "stage3.feature_cache_gb is 0" and "gb" not in meta


def test_a_failure_while_encoding_leaves_no_features_folder(tmp_path: Path) -> None:
    data = dataset(tmp_path / "d", 4)
    Path(data.paths[3]).write_bytes(b"not an array")
    with pytest.raises(ValueError):
        fc.write_features(build_encoder(ENC), [data], -1, tmp_path / "f", torch.device("cpu"), 2, max_gb=1.0)
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.partial").exists()


def test_experiments_sharing_one_features_folder_train_as_with_their_own(tmp_path: Path) -> None:
    """Two frozen experiments (SC and input-only) read one folder built from their Stage 2 encoder, and reach the
    weights each gets when it encodes its volumes itself; an encoder without features stays as it was."""
    train, holdout = dataset(tmp_path / "d"), dataset(tmp_path / "h", 2, seed=2)
    tok = tmp_path / "tok.json"
    train_bpe(TEXTS * 4, 80, tok, min_frequency=1)
    torch.manual_seed(3)
    init = tmp_path / "stage2"
    save_encoder(build_encoder(ENC), ENC, init)
    torch.manual_seed(3)
    shared = tmp_path / "features"
    fc.write_features(build_encoder(ENC), [train, holdout], -1, shared, torch.device("cpu"), 2, max_gb=1.0)
    args = (train, holdout, tok, init, ENC, GRID, {**DECODER, "dropout": 0.0})
    for exp in (FROZEN_SC, FROZEN_INPUT):
        train_stage3(*args, s3cfg(eval_every=2), exp, tmp_path / f"{exp.name}_shared", "cpu", 1, 0, features=shared)
        train_stage3(*args, s3cfg(eval_every=2), exp, tmp_path / f"{exp.name}_own", "cpu", 1, 0)
        a, b = weights(tmp_path / f"{exp.name}_shared"), weights(tmp_path / f"{exp.name}_own")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert json.loads((shared / "features.json").read_text())["volumes"] == len({*train.names, *holdout.names})
    with pytest.raises(ValueError, match="encoder"):  # a random encoder (no --init) is not this folder's
        train_stage3(train, holdout, tok, None, ENC, GRID, DECODER, s3cfg(), FROZEN_SC, tmp_path / "x", "cpu", 1, 0,
                     features=shared)


def test_reports_generated_from_stored_features_are_those_from_the_volumes(tmp_path: Path) -> None:
    """Generation reads the scored split's features (full precision, as it runs the encoder) instead of the
    volumes and writes the same reports; features of another encoder are refused."""
    from uvlm.generate import generate_reports
    from uvlm.models.report_factory import load_report_model

    train, scored = dataset(tmp_path / "d"), dataset(tmp_path / "s", 5, seed=4)
    tok = tmp_path / "tok.json"
    train_bpe(TEXTS * 4, 80, tok, min_frequency=1)
    train_stage3(train, scored, tok, None, ENC, GRID, DECODER, s3cfg(steps=12), FROZEN_SC, tmp_path / "m", "cpu", 1, 0)
    model, _ = load_report_model(tmp_path / "m", torch.device("cpu"))
    fc.write_features(model.encoder, [scored], -1, tmp_path / "f", torch.device("cpu"), 2, 1.0, mixed_precision=False)
    direct = generate_reports(tmp_path / "m", scored, tmp_path / "a.parquet", 12, 2, "cpu", 1)
    stored = generate_reports(tmp_path / "m", scored, tmp_path / "b.parquet", 12, 2, "cpu", 1, features=tmp_path / "f")
    assert stored.equals(direct) and direct["n_tokens"].sum() > 0
    torch.manual_seed(9)
    fc.write_features(build_encoder(ENC), [scored], -1, tmp_path / "g", torch.device("cpu"), 2, 1.0)
    with pytest.raises(ValueError, match="encoder"):
        generate_reports(tmp_path / "m", scored, tmp_path / "c.parquet", 12, 2, "cpu", 1, features=tmp_path / "g")
