"""Every GGUF tensor type we accept becomes MLX quantized weights that compute what
gguf's own ``gguf.quants.dequantize`` says the file holds.

Types gguf can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are made from a tiny llama's
weights; the K-quants, which gguf only dequantizes, are written as random valid
blocks (finite float16 scales sized so the weights look like a model's).
"""

from __future__ import annotations

import gguf
import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_fixtures import GGUF_ARCH, gguf_name, llama_cpp_permute, write_model_gguf
from mlx.utils import tree_flatten
from test_gguf_families import load_float32, logits
from tiny_models import VOCAB, model_classes

from mlx_hooks import gguf_tensors
from mlx_hooks.errors import GGUFError
from mlx_hooks.gguf_convert import convert_gguf, inspect_gguf
from mlx_hooks.gguf_tensors import PLANS, pack_codes

CONFIG = dict(model_type="llama", hidden_size=256, num_hidden_layers=2, intermediate_size=512,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
              tie_word_embeddings=False)
IDS = [5, 17, 200, 3, 99, 99, 42, 7, 250, 1, 64, 128, 30, 31, 2, 77]
# Random-block layouts: bytes per 256-weight block, offset of the float16 scale d, offset of
# the float16 minimum dmin (None: symmetric type) and dmin / d, and a d that makes the weights
# zero-mean with a standard deviation near 0.05, like a model's.
K_BLOCKS = {
    Q.Q2_K: (84, 80, 82, 1.5, 3.6e-3),   # scales[16] qs[64] d dmin; 4-bit scale and min, 2-bit codes
    Q.Q3_K: (110, 108, None, 0, 1.2e-3),  # hmask[32] qs[64] scales[12] d; w = d (sc - 32) q, q in -4..3
    Q.Q4_K: (144, 0, 2, 7.5, 2e-4),      # d dmin scales[12] qs[128]; 6-bit scale and min, 4-bit codes
    Q.Q5_K: (176, 0, 2, 15.5, 1e-4),     # d dmin scales[12] qh[32] qs[128]; 5-bit codes
    Q.Q6_K: (210, 208, None, 0, 1.5e-4),  # ql[128] qh[64] scales[16] d; w = d sc (q - 32)
}
EXACT = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K"]
REQUANTIZED = ["Q2_K", "Q3_K", "Q6_K"]


pytestmark = pytest.mark.usefixtures("private_cache")  # conftest: a cache folder of this module's own


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_pack_codes_matches_mlx_layout(bits):
    codes = np.random.default_rng(bits).integers(0, 1 << bits, (6, 256), dtype=np.uint8)
    scales = mx.ones((6, 256 // 32), dtype=mx.float32)
    back = mx.dequantize(mx.array(pack_codes(codes, bits)), scales, mx.zeros_like(scales), group_size=32, bits=bits)
    np.testing.assert_array_equal(np.array(back), codes.astype(np.float32))


def random_blocks(qtype: Q, rows: int, cols: int, rng) -> np.ndarray:
    size, d_at, dmin_at, dmin_ratio, magnitude = K_BLOCKS[qtype]
    blocks = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    if qtype == Q.Q6_K:  # int8 sub-block scales in [-32, 32), not up to 127
        blocks[:, 192:208] = rng.integers(-32, 32, (len(blocks), 16), dtype=np.int8).view(np.uint8)
    d = magnitude * rng.uniform(0.5, 1.5, len(blocks))
    for offset, value in ((d_at, d), (dmin_at, d * dmin_ratio)):
        if offset is not None:
            blocks[:, offset:offset + 2] = value.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def build_case(kind: str, path, seed: int = 0):
    """A GGUF llama with every matrix in ``kind``; returns the reference model (gguf-dequantized weights)."""
    model_cls, args_cls = model_classes("llama")
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(dict(CONFIG)))
    params = [(k, mx.random.normal(v.shape) * (0.05 if v.ndim == 2 else 0.3) + (v.ndim == 1)) for k, v in
              tree_flatten(model.parameters())]
    model.load_weights(params)
    qtype = Q[kind]
    raw = {}
    if qtype in K_BLOCKS:
        rng = np.random.default_rng(seed)
        for name, value in tree_flatten(model.parameters()):
            if value.ndim == 2:
                raw[gguf_name(name, False)] = (random_blocks(qtype, *value.shape, rng), qtype)
    weights = write_model_gguf(path, model, "llama", qtype if qtype not in K_BLOCKS else Q.F32, raw=raw)
    reference = model_cls(args_cls.from_dict(dict(CONFIG)))
    reference.load_weights(weights)
    return reference


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("quants")
    cases = {}
    for kind in EXACT + REQUANTIZED:
        reference = build_case(kind, root / f"{kind}.gguf")
        folder = convert_gguf(root / f"{kind}.gguf", root / kind)
        cases[kind] = (reference, folder)
    return cases


@pytest.mark.parametrize("kind", EXACT + REQUANTIZED)
def test_weights_within_the_stated_bound(kind, converted):
    """Exact types: every weight as gguf dequantizes it, up to the float16 rounding of a
    K-quant sub-block's scale and offset (2^-11 relative each). Re-quantized types: each
    weight within one step of its new 32-group (|error| <= |scale|; mx.quantize shifts its
    grid so that zero is exact, so the far end of a group can be a whole step off), plus
    that same float16 rounding."""
    reference, folder = converted[kind]
    model, _ = mlx_lm.load(str(folder))
    want = dict(tree_flatten(reference.parameters()))
    bits, checked = PLANS[kind].bits, 0
    for path, layer in model.named_modules():
        if not hasattr(layer, "scales"):
            continue
        scale, offset = (np.array(a.astype(mx.float32)) for a in (layer.scales, layer.biases))
        got = np.array(mx.dequantize(layer.weight, mx.array(scale), mx.array(offset), group_size=32, bits=bits))
        err = np.abs(got - np.array(want[f"{path}.weight"])).reshape(*scale.shape, 32).max(-1)
        reach = np.abs(scale) * ((1 << bits) - 1) + np.abs(offset)  # largest |weight| the group can hold
        rounding = 2.0**-11 * reach  # float16 scale and offset
        if PLANS[kind].exact:
            bound = rounding * kind.endswith("_K") + 1e-6 * reach  # Q4_0..Q8_0 fields are float16 already
        else:
            bound = np.abs(scale) + rounding + 1e-6 * reach
        assert (err <= bound).all(), (kind, path, float((err - bound).max()))
        checked += 1
    assert checked == 1 + 2 * 7 + 1  # embedding, 7 matrices per block, lm_head


def minmax_requantized(reference, bits: int):
    """``reference`` with every matrix re-quantized independently (plain min/max affine, group 32)."""
    def requantize(w):
        g = np.array(w).reshape(w.shape[0], -1, 32)
        lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
        step = (hi - lo) / ((1 << bits) - 1)
        return mx.array((np.rint((g - lo) / np.where(step == 0, 1, step)) * step + lo).reshape(w.shape))

    model_cls, args_cls = model_classes("llama")
    other = model_cls(args_cls.from_dict(dict(CONFIG)))
    other.load_weights([(k, requantize(v) if v.ndim == 2 else v) for k, v in tree_flatten(reference.parameters())])
    return other


@pytest.mark.parametrize("kind", EXACT + REQUANTIZED)
def test_logits_match_dequantized_reference(kind, converted):
    """Exact types: the reference's logits up to float16 scale rounding (measured max |diff| /
    max |logit|: 0 for Q4_0..Q8_0, 2.4e-3..4.3e-3 for Q4_K/Q5_K over seeds 0-2). Re-quantized
    types: no further from the reference than an independent min/max re-quantization at the
    same width - what re-quantizing implies (measured RMS ratio 0.72-1.36 over seeds 0-4)."""
    reference, folder = converted[kind]
    model, _ = load_float32(folder)
    got, want = logits(model, IDS), logits(reference, IDS)
    if PLANS[kind].exact:
        assert np.abs(got - want).max() < 1e-2 * np.abs(want).max(), kind
        return
    implied = logits(minmax_requantized(reference, PLANS[kind].bits), IDS)
    rms = lambda a: float(np.sqrt(((a - want) ** 2).mean()))  # noqa: E731
    assert rms(got) < 1.5 * rms(implied), (kind, rms(got), rms(implied))


def test_file_types_and_bits(converted):
    for kind in EXACT + REQUANTIZED:
        reference, folder = converted[kind]
        model, _ = mlx_lm.load(str(folder))
        assert model.model.layers[0].mlp.down_proj.bits == PLANS[kind].bits
        assert model.model.layers[0].self_attn.q_proj.group_size == 32


def test_slices_and_shards_change_nothing(tmp_path, monkeypatch):
    """Row slices of the dequantization and the split into several safetensors files are invisible."""
    build_case("Q4_K", tmp_path / "m.gguf", seed=1)
    whole, _ = load_float32(convert_gguf(tmp_path / "m.gguf", tmp_path / "whole"))
    monkeypatch.setattr(gguf_tensors, "SLICE_ELEMENTS", 3 * 256)  # 3 rows at a time
    monkeypatch.setattr(gguf_tensors, "SHARD_BYTES", 200_000)
    out = convert_gguf(tmp_path / "m.gguf", tmp_path / "pieces")
    shards = sorted(p.name for p in out.glob("model*.safetensors"))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert (out / "model.safetensors.index.json").is_file()
    pieces, _ = load_float32(out)
    np.testing.assert_array_equal(logits(pieces, IDS), logits(whole, IDS))


def test_non_finite_scale_refused(tmp_path):
    rng = np.random.default_rng(0)
    blocks = random_blocks(Q.Q4_K, 512, 256, rng)
    blocks[7, 0:2] = np.array([np.inf], dtype=np.float16).view(np.uint8)
    model_cls, args_cls = model_classes("llama")
    model = model_cls(args_cls.from_dict(dict(CONFIG)))
    with np.errstate(invalid="ignore"):  # the fixture's own reference dequantization meets the inf too
        write_model_gguf(tmp_path / "inf.gguf", model, "llama", raw={"blk.1.ffn_up.weight": (blocks, Q.Q4_K)})
    assert inspect_gguf(tmp_path / "inf.gguf").tensor_types["Q4_K"] == 1
    with pytest.raises(GGUFError, match=r"inf\.gguf: tensor 'blk\.1\.ffn_up\.weight'.*non-finite"):
        convert_gguf(tmp_path / "inf.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
