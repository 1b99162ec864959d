"""SentencePiece vocabularies (tokenizer.ggml.model = "llama") give the ids of the reference
implementation, the ``sentencepiece`` package.

A small model is trained here on a multilingual text, exported into a GGUF the way
llama.cpp's ``_set_vocab_sentencepiece`` does (pieces, scores, types, add_space_prefix),
converted, and compared with ``SentencePieceProcessor.encode`` on text with user-defined
and control symbols and with characters the vocabulary lacks (byte fallback).
"""

from __future__ import annotations

import io
import json
import re

import mlx_lm
import pytest
from gguf_fixtures import write_model_gguf
from tiny_models import CONFIGS, make_model

from mlx_hooks.errors import GGUFError
from mlx_hooks.gguf_convert import convert_gguf, inspect_gguf

spm = pytest.importorskip("sentencepiece")  # the dev extra; the converter itself does not need it

CORPUS = """The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away again and again.
Le renard brun rapide saute par-dessus le chien paresseux. Où est la bibliothèque ? Très bien, merci.
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Straße, schön, Mädchen, Übung.
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, как дела? Хорошо, спасибо.
Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί. Καλημέρα!
敏捷的棕色狐狸跳过了懒狗。今天天气很好。我们去公园散步吧。
Numbers: 12345, 3.14159, 2024-06-01. Code: def double(x): return x * 2
"""
USER_DEFINED = ["<|im_start|>", "<|im_end|>"]
CONTROL = ["<start_of_turn>"]
TEXTS = [
    *CORPUS.splitlines(),
    "  two leading spaces, a tab\there, and  double  spaces  ",
    "Unseen: 🙂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮ Ω ₿ ꙮ 日本語のテキスト",  # absent characters: byte fallback
    "line one\nline two\n\nline four",
    "hi <|im_start|>user\nBonjour, ça va ?<|im_end|>\n<|im_start|>assistant\nOui !",
    "<|im_start|>x<|im_end|>",
    "<start_of_turn>user\nПривет!<start_of_turn>model\n",
    CORPUS,
]
CHAT_TEMPLATE = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache folder of this module's own


def train(model_type: str, prefix: bool):
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 20), model_writer=out, model_type=model_type,
        vocab_size=700, hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True,
        # As Llama's and Gemma's tokenizers: no normalization, whitespace kept as is.
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=prefix,
        split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=USER_DEFINED,
        control_symbols=CONTROL, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=out.getvalue())


def export(sp) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and llama.cpp token types, as _set_vocab_sentencepiece writes them."""
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i)
             else 4 if pieces[i] in USER_DEFINED else 1 for i in range(n)]
    return pieces, [sp.get_score(i) for i in range(n)], types


def segment_ids(sp, text: str) -> list[int]:
    """SentencePiece ids with every added symbol split out first and each stretch of text
    encoded on its own - llama.cpp's (and these models' tokenizer.json's) way."""
    pattern = "(" + "|".join(re.escape(s) for s in USER_DEFINED + CONTROL) + ")"
    return [i for part in re.split(pattern, text) if part
            for i in ([sp.piece_to_id(part)] if part in USER_DEFINED + CONTROL else sp.encode(part))]


@pytest.fixture(scope="module", params=[("bpe", True), ("bpe", False), ("unigram", True), ("unigram", False)],
                ids=["bpe-prefix", "bpe", "unigram-prefix", "unigram"])
def case(request, tmp_path_factory):
    model_type, prefix = request.param
    sp = train(model_type, prefix)
    pieces, scores, types = export(sp)
    root = tmp_path_factory.mktemp(f"spm-{model_type}-{prefix}")

    def meta(w):
        w.add_tokenizer_model("llama")
        w.add_token_list(pieces)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(prefix)
        w.add_bos_token_id(sp.bos_id())
        w.add_eos_token_id(sp.eos_id())
        w.add_unk_token_id(sp.unk_id())
        w.add_add_bos_token(True)
        w.add_chat_template(CHAT_TEMPLATE)

    saved = dict(CONFIGS["llama"])
    CONFIGS["llama"] = {**saved, "vocab_size": len(pieces)}  # an embedding row per piece
    try:
        write_model_gguf(root / "spm.gguf", make_model("llama"), "llama", meta=meta)
    finally:
        CONFIGS["llama"] = saved
    assert inspect_gguf(root / "spm.gguf").tokenizer_model == "llama"
    _, tok = mlx_lm.load(str(convert_gguf(root / "spm.gguf", root / "out")))
    return sp, tok, prefix, root / "out", model_type


def test_ids_match_sentencepiece(case):
    sp, tok, prefix, _, _ = case
    used_bytes = False
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == segment_ids(sp, text), text
        if CONTROL[0] not in text and not (prefix and any(s in text for s in USER_DEFINED)):
            # SentencePiece on the whole text agrees too; it only differs after a user-defined
            # symbol when it prepends "▁" (it does not start a new word there), and it does
            # not parse control symbols at all.
            assert ids == sp.encode(text), text
        used_bytes |= any(sp.is_byte(i) for i in ids)
    assert used_bytes  # the unseen characters went through <0x..> pieces


def test_decode_round_trips(case):
    sp, tok, prefix, _, _ = case
    symbols = "|".join(re.escape(s) for s in USER_DEFINED + CONTROL)
    for text in TEXTS:
        assert sp.decode(sp.encode(text)) == text  # the reference is lossless on these texts
        expected = text
        if prefix:  # the "▁" that opens a stretch after an added symbol decodes as a space (as in llama.cpp)
            expected = re.sub(f"({symbols})(?!{symbols}|$)", r"\1 ", text)
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == expected


def test_specials_template_and_streaming(case):
    sp, tok, prefix, folder, _ = case
    assert tok.encode("Hello")[0] == sp.bos_id()  # add_bos_token -> the post-processor adds BOS
    assert tok.encode(CONTROL[0]) == [sp.bos_id(), sp.piece_to_id(CONTROL[0])]  # control symbols whole
    assert tok.eos_token_ids == {sp.eos_id()}
    prompt = tok.apply_chat_template([{"role": "user", "content": "Привет"}], tokenize=False)
    assert prompt == "<start_of_turn>user\nПривет\n"
    # mlx-lm recognises the decoder and streams with its SentencePiece detokenizer.
    assert type(tok.detokenizer).__name__ == "SPMStreamingDetokenizer"
    text = TEXTS[1] + " 🙂"
    detok = tok.detokenizer
    detok.reset()
    for i in tok.encode(text, add_special_tokens=False):
        detok.add_token(i)
    detok.finalize()
    assert detok.text == text
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["bos_token"] == "<s>" and config["chat_template"] == CHAT_TEMPLATE


def test_bpe_or_unigram_from_scores(case):
    """A BPE-trained model's scores are whole numbers (merge ranks): it becomes BPE merges;
    a Unigram model's log-probabilities make a Unigram model."""
    _, _, _, folder, model_type = case
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    assert model["type"] == {"bpe": "BPE", "unigram": "Unigram"}[model_type]
    assert model["byte_fallback"] is True


def test_vocabulary_without_scores_refused(tmp_path):
    def meta(w):
        w.add_tokenizer_model("llama")

    write_model_gguf(tmp_path / "noscores.gguf", make_model("llama"), "llama", meta=meta)
    with pytest.raises(GGUFError, match=r"noscores\.gguf: SentencePiece vocabulary without scores"):
        inspect_gguf(tmp_path / "noscores.gguf")
