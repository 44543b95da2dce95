"""A small BPE tokenizer trained locally (no hub download) for the tiny presets.

Metaspace pre-tokenisation ("always" prepends the word marker) makes "forest" tokenise the same
alone and after a space, so an answer tokenised on its own matches the answer inside a prompt; the
closed-set scorer and the training labels rely on that. Printable ASCII is always in the alphabet,
so unseen words split into characters instead of <unk>.

Boxes ({<x1><y1><x2><y2>}, geostrata.boxes) are read and written as six tokens: "{", "}" and
the coordinates "<0>" .. "<100>" are added tokens (not special, so they decode back as text),
matched before BPE sees the text. A box costs the same whatever the corpus held, every
coordinate is one token whose embedding is learned from every box it occurs in, and a generated
box decodes exactly as it was written.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from transformers import PreTrainedTokenizerFast

from geostrata.boxes import BOX_SCALE
from geostrata.errors import ConfigError

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>")  # ids 0..4
IMAGE_TOKEN = "<image>"
BOX_TOKENS: tuple[str, ...] = ("{", "}", *(f"<{i}>" for i in range(BOX_SCALE + 1)))


def train_tokenizer(
    texts: list[str], vocab_size: int = 2000, extra_tokens: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on `texts`; special tokens <pad>=0 <s>=1 </s>=2 <unk>=3 <image>=4,
    then `extra_tokens` (e.g. cue pointers) from 5 on; the BOX_TOKENS come after the
    `vocab_size` BPE tokens."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    alphabet = sorted(set(string.printable) - set(string.whitespace))
    specials = [*SPECIAL_TOKENS, *extra_tokens]
    if vocab_size < len(specials) + len(alphabet) + 1:
        raise ConfigError(
            f"vocab_size={vocab_size}: too small for the special tokens and the "
            f"{len(alphabet)}-character alphabet"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in BOX_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=[IMAGE_TOKEN, *extra_tokens],
    )
