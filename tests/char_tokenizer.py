"""A character-level tokenizer for prompt-format tests: one character = one token, no downloads.

``decode(encode(text)) == text`` exactly for any text over :data:`ALPHABET`, so a fixture can
show a format's exact text and a test can count its tokens by characters. Special tokens:
``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``, and Gemma's ``<start_of_turn>``/``<end_of_turn>``
(each one token). The chat template is a simplified Gemma one (system message prepended to the
first user turn, contents trimmed, ``<start_of_turn>model\\n`` as generation prompt).
"""

from __future__ import annotations

import string

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
#: printable ASCII plus the typographic characters the tests and the MT-Bench instruction use
ALPHABET = string.printable + "’‘“”—–…éèàüöä°€£×→✓"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] | trim ~ '\n\n' -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}{%- set first = '' -%}{%- set rest = messages -%}{%- endif -%}"
    "{%- for message in rest -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' ~ role ~ '\n' ~ (first if loop.first else '') ~ (message['content'] | trim) ~ "
    "'<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def char_tokenizer(chat_template: bool = True):
    """A ``PreTrainedTokenizerFast`` whose tokens are single characters (see module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in ALPHABET:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"], clean_up_tokenization_spaces=False,
    )
    if chat_template:
        out.chat_template = CHAT_TEMPLATE
    return out
