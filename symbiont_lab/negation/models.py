"""TinyLSTM (MLX's ``nn.LSTM``) and a seed-batched version that trains many seeds as one model.

Sizes as published: embedding 8, one LSTM layer with hidden size 32, a linear head to one
logit (sigmoid = P(positive)). Training: Adam, lr 0.005, weight decay 1e-4 added to the
gradient as PyTorch's ``Adam(weight_decay=...)`` does (coupled L2, bias-corrected moments),
batch 32, binary cross-entropy on the logit (soft targets allowed, for distillation).

:class:`TinyLSTM` is the reference: MLX's ``nn.Embedding``/``nn.LSTM``/``nn.Linear``.
:class:`SeedBatch` holds M members' weights stacked on a leading axis and runs all of them
in one graph: per time step one batched matmul ``[M, B, H] @ [M, H, 4H]`` and one fused
element-wise kernel. Two things make it fast on MLX's CPU backend, both measured
(``benchmarks/negation_seeds.py``):

- MLX's CPU ``exp``/``sigmoid``/``tanh`` are scalar (~15–20 ns an element), which made the
  gate non-linearities most of the step. Here ``tanh`` is the rational approximation
  Eigen and XLA use for float32 (max abs error 3.5e-7 over the reals, measured against
  float64) and ``sigmoid(x) = (1 + tanh(x/2)) / 2``; inside ``mx.compile`` it fuses into
  one vectorised kernel.
- One sigmoid kernel covers all four gates (``tanh(x) = 2·sigmoid(2x) − 1`` for g), on a
  contiguous ``[M, B, 4H]`` slice (inputs are laid out time-major).
- The backward pass is written out (back-propagation through time as a
  ``mx.custom_function`` VJP): one concatenate and one matmul per step, and one matmul
  for the recurrent weight gradient, instead of autodiff's slice/pad/scatter graph.

Both are checked against :class:`TinyLSTM` and MLX autodiff in ``tests/test_negation_lab.py``
(outputs and gradients agree to ~1e-7). Every member's arithmetic is independent of the
others (no reduction crosses members), so a seed trains the same alone or batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

EMBED = 8
HIDDEN = 32
LEARNING_RATE = 0.005
WEIGHT_DECAY = 1e-4
BETAS = (0.9, 0.999)
EPS = 1e-8


# -- fast, accurate activations --------------------------------------------------------------------
_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
          -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
_CLAMP = 7.90531110763549805


def tanh_approx(x: mx.array) -> mx.array:
    """float32 tanh as a 13/6 rational function (Eigen's/XLA's; |error| < 4e-7)."""
    x = mx.clip(x, -_CLAMP, _CLAMP)
    x2 = x * x
    p = _ALPHA[6]
    for a in _ALPHA[5::-1]:
        p = p * x2 + a
    q = _BETA[3]
    for b in _BETA[2::-1]:
        q = q * x2 + b
    return x * p / q


def sigmoid_approx(x: mx.array) -> mx.array:
    return 0.5 + 0.5 * tanh_approx(0.5 * x)


def _gate_scale(four_h: int) -> mx.array:
    """1 for the i, f, o blocks and 2 for g: tanh(x) = 2·sigmoid(2x) − 1, so one sigmoid covers all four."""
    h_ = four_h // 4
    return mx.array(np.r_[np.ones(2 * h_), np.full(h_, 2.0), np.ones(h_)].astype(np.float32))


def _cell(pre: mx.array, c: mx.array | None, scale: mx.array):
    """LSTM cell from pre-activations [..., 4H] (gate order i, f, g, o as nn.LSTM).

    Returns h, c, tanh(c) and ``a`` = sigmoid(pre · scale) (for g: sigmoid(2x), g = 2a − 1).
    """
    h_ = pre.shape[-1] // 4
    a = sigmoid_approx(pre * scale)  # one contiguous kernel over all four gates
    i, f, o = a[..., :h_], a[..., h_:2 * h_], a[..., 3 * h_:]
    g = 2 * a[..., 2 * h_:3 * h_] - 1
    c_new = i * g if c is None else f * c + i * g
    tc = tanh_approx(c_new)
    return o * tc, c_new, tc, a


@mx.custom_function
def lstm_last_hidden(xp: mx.array, wh_t: mx.array):
    """Batched LSTM over ``xp`` [T, M, B, 4H] (input projection + bias done) with ``wh_t`` [M, H, 4H].

    Returns the last hidden state [M, B, H] first, then what the hand-written backward pass
    needs, per step: hidden states, cell states, tanh of the cell states, gate activations
    (T arrays each; kept as they are, no stacking copies).
    """
    steps = xp.shape[0]
    scale = _gate_scale(xp.shape[-1])
    hs, cs, tcs, acts = [], [], [], []
    h = c = None
    for t in range(steps):
        pre = xp[t] if h is None else xp[t] + h @ wh_t
        h, c, tc, a = _cell(pre, c, scale)
        hs.append(h)
        cs.append(c)
        tcs.append(tc)
        acts.append(a)
    return (h, *hs, *cs, *tcs, *acts)


@lstm_last_hidden.vjp
def _lstm_last_hidden_vjp(primals, cotangents, outputs):
    xp, wh_t = primals
    steps, m, b, four_h = xp.shape
    h_ = four_h // 4
    dh = cotangents[0]
    hs, cs, tcs, acts = (outputs[1 + k * steps:1 + (k + 1) * steps] for k in range(4))
    w = wh_t.transpose(0, 2, 1)
    dc = None
    d_pre = [None] * steps
    for t in range(steps - 1, -1, -1):
        a = acts[t]
        i, f, o = a[..., :h_], a[..., h_:2 * h_], a[..., 3 * h_:]
        g = 2 * a[..., 2 * h_:3 * h_] - 1
        tc = tcs[t]
        through_h = dh * o * (1 - tc * tc)
        dc = through_h if dc is None else dc + through_h
        di = dc * g * i * (1 - i)
        df = dc * cs[t - 1] * f * (1 - f) if t > 0 else mx.zeros_like(dc)
        dg = dc * i * (1 - g * g)
        do = dh * tc * o * (1 - o)
        d_pre[t] = mx.concatenate([di, df, dg, do], axis=-1)
        if t > 0:
            dc = dc * f
            dh = d_pre[t] @ w
    d_all = mx.stack(d_pre, axis=1)  # [M, T, B, 4H]
    h_prev = mx.stack([mx.zeros_like(hs[0]), *hs[:-1]], axis=1)  # [M, T, B, H]
    d_wh_t = h_prev.reshape(m, steps * b, h_).transpose(0, 2, 1) @ d_all.reshape(m, steps * b, four_h)
    return d_all.transpose(1, 0, 2, 3), d_wh_t


# -- the reference model ---------------------------------------------------------------------------
class TinyLSTM(nn.Module):
    """Embedding(vocab, 8) → nn.LSTM(8, 32) → Linear(32, 1); the logit at the last position."""

    def __init__(self, vocab: int, embed: int = EMBED, hidden: int = HIDDEN):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, 1)

    def __call__(self, tokens: mx.array) -> mx.array:
        hidden, _ = self.lstm(self.embedding(tokens))
        return self.head(hidden[:, -1])[:, 0]


def init_params(seed: int, vocab: int, embed: int = EMBED, hidden: int = HIDDEN) -> dict:
    """A :class:`TinyLSTM` parameter tree drawn as MLX's layers draw it, from ``seed`` alone."""
    keys = mx.random.split(mx.random.key(seed), 6)
    s = 1.0 / math.sqrt(hidden)
    return {
        "embedding": {"weight": mx.random.normal((vocab, embed), key=keys[0]) * math.sqrt(1.0 / embed)},
        "lstm": {
            "Wx": mx.random.uniform(-s, s, (4 * hidden, embed), key=keys[1]),
            "Wh": mx.random.uniform(-s, s, (4 * hidden, hidden), key=keys[2]),
            "bias": mx.random.uniform(-s, s, (4 * hidden,), key=keys[3]),
        },
        "head": {"weight": mx.random.uniform(-s, s, (1, hidden), key=keys[4]),
                 "bias": mx.random.uniform(-s, s, (1,), key=keys[5])},
    }


def tiny_lstm(params: dict) -> TinyLSTM:
    vocab, embed = params["embedding"]["weight"].shape
    model = TinyLSTM(vocab, embed, params["lstm"]["Wh"].shape[1])
    model.update(params)
    return model


def bce_with_logits(logits: mx.array, targets: mx.array) -> mx.array:
    """Element-wise binary cross-entropy; ``targets`` may be soft (probabilities)."""
    return mx.logaddexp(0.0, logits) - targets * logits


def adam_l2(params, grads, m, v, t, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS):
    """One Adam step with weight decay added to the gradient (PyTorch ``Adam`` semantics)."""
    b1, b2 = betas
    grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)
    m = tree_map(lambda mi, g: b1 * mi + (1 - b1) * g, m, grads)
    v = tree_map(lambda vi, g: b2 * vi + (1 - b2) * g * g, v, grads)
    c1 = 1 - b1 ** t
    c2 = 1 - b2 ** t
    params = tree_map(lambda p, mi, vi: p - lr * (mi / c1) / (mx.sqrt(vi / c2) + eps), params, m, v)
    return params, m, v


class ReferenceTrainer:
    """One seed at a time: :class:`TinyLSTM` (nn.LSTM) with a compiled Adam step."""

    def __init__(self, params: dict):
        self.model = tiny_lstm(params)
        self.params = self.model.parameters()
        self.m = tree_map(mx.zeros_like, self.params)
        self.v = tree_map(mx.zeros_like, self.params)
        self.t = 0
        model = self.model

        def loss_fn(p, tokens, targets):
            model.update(p)
            return bce_with_logits(model(tokens), targets).mean()

        grad_fn = mx.value_and_grad(loss_fn)

        def step(p, m, v, t, tokens, targets):
            loss, g = grad_fn(p, tokens, targets)
            p, m, v = adam_l2(p, g, m, v, t)
            return loss, p, m, v

        self._step = mx.compile(step)

    def step(self, tokens: mx.array, targets: mx.array) -> mx.array:
        self.t += 1
        loss, self.params, self.m, self.v = self._step(self.params, self.m, self.v, mx.array(float(self.t)),
                                                       tokens, targets)
        mx.eval(loss, self.params, self.m, self.v)
        self.model.update(self.params)
        return loss


# -- the seed-batched model ------------------------------------------------------------------------
def _to_batched(trees: list[dict]) -> dict:
    stacked = tree_map(lambda *leaves: mx.stack(leaves), *trees)
    return {
        "embedding": stacked["embedding"]["weight"],                       # [M, V, E]
        "wx": stacked["lstm"]["Wx"],                                       # [M, 4H, E]
        "wh_t": mx.contiguous(stacked["lstm"]["Wh"].transpose(0, 2, 1)),   # [M, H, 4H]
        "bias": stacked["lstm"]["bias"],                                   # [M, 4H]
        "head_w": stacked["head"]["weight"][:, 0],                         # [M, H]
        "head_b": stacked["head"]["bias"][:, 0],                           # [M]
    }


def _input_table(p: dict) -> mx.array:
    """Per member, every token's input projection plus bias: [M, V, 4H]."""
    return p["embedding"] @ p["wx"].transpose(0, 2, 1) + p["bias"][:, None, :]


def _offsets(p: dict) -> mx.array:
    m, vocab = p["embedding"].shape[:2]
    return (mx.arange(m) * vocab)[:, None, None]


def batched_logits(p: dict, tokens: mx.array) -> mx.array:
    """Training forward: logits [M, B] for tokens [M, B, T] (with the hand-written backward)."""
    m, vocab = p["embedding"].shape[:2]
    table = _input_table(p).reshape(m * vocab, -1)
    xp = table[(tokens + _offsets(p)).transpose(2, 0, 1)]  # [T, M, B, 4H]: each step's slice contiguous
    h = lstm_last_hidden(xp, p["wh_t"])[0]
    return (h * p["head_w"][:, None, :]).sum(-1) + p["head_b"][:, None]


def batched_logits_eval(p: dict, tokens: mx.array) -> mx.array:
    """Inference forward (nothing kept for a backward pass): logits [M, N] for tokens [M, N, T]."""
    m, vocab = p["embedding"].shape[:2]
    table = _input_table(p).reshape(m * vocab, -1)
    idx = (tokens + _offsets(p)).transpose(2, 0, 1)
    scale = _gate_scale(table.shape[-1])
    h = c = None
    for t in range(tokens.shape[2]):
        pre = table[idx[t]]
        if h is not None:
            pre = pre + h @ p["wh_t"]
        h, c, _, _ = _cell(pre, c, scale)
    return (h * p["head_w"][:, None, :]).sum(-1) + p["head_b"][:, None]


def _member_losses(p: dict, tokens: mx.array, targets: mx.array):
    per_member = bce_with_logits(batched_logits(p, tokens), targets).mean(axis=1)
    return per_member.sum(), per_member


_loss_and_grad = mx.value_and_grad(_member_losses)


def _train_step(p, m, v, t, tokens, targets):
    (_, per_member), grads = _loss_and_grad(p, tokens, targets)
    p, m, v = adam_l2(p, grads, m, v, t)
    return per_member, p, m, v


_compiled_step = mx.compile(_train_step)
_compiled_eval = mx.compile(batched_logits_eval)


@dataclass
class SeedBatch:
    """M TinyLSTMs trained as one vectorised model (weights stacked on axis 0)."""

    params: dict
    m: dict
    v: dict
    t: int = 0

    @classmethod
    def from_trees(cls, trees: list[dict]) -> "SeedBatch":
        params = _to_batched(trees)
        return cls(params, tree_map(mx.zeros_like, params), tree_map(mx.zeros_like, params))

    @classmethod
    def init(cls, seeds: list[int], vocab: int) -> "SeedBatch":
        return cls.from_trees([init_params(s, vocab) for s in seeds])

    @property
    def size(self) -> int:
        return int(self.params["head_b"].shape[0])

    @property
    def vocab(self) -> int:
        return int(self.params["embedding"].shape[1])

    def step(self, tokens: mx.array, targets: mx.array) -> mx.array:
        """One Adam step for every member: tokens [M, B, T] int32, targets [M, B]; returns losses [M]."""
        self.t += 1
        loss, self.params, self.m, self.v = _compiled_step(
            self.params, self.m, self.v, mx.array(float(self.t)), tokens, targets)
        mx.eval(loss, self.params, self.m, self.v)
        return loss

    def member_tree(self, k: int) -> dict:
        """Member k's weights as a :class:`TinyLSTM` parameter tree."""
        p = self.params
        return {
            "embedding": {"weight": p["embedding"][k]},
            "lstm": {"Wx": p["wx"][k], "Wh": p["wh_t"][k].T, "bias": p["bias"][k]},
            "head": {"weight": p["head_w"][k][None, :], "bias": p["head_b"][k][None]},
        }

    def member_model(self, k: int) -> TinyLSTM:
        return tiny_lstm(self.member_tree(k))

    def probabilities(self, tokens: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """P(positive) [M, N] for tokens [M, N, T] (per member) or [N, T] (the same for all)."""
        tokens = np.asarray(tokens)
        shared = tokens.ndim == 2
        n = tokens.shape[-2]
        out = []
        for start in range(0, n, chunk):
            part = tokens[..., start:start + chunk, :].astype(np.int32)
            part = mx.array(part)
            if shared:
                part = mx.broadcast_to(part[None], (self.size, *part.shape))
            out.append(np.array(mx.sigmoid(_compiled_eval(self.params, part))))
        return np.concatenate(out, axis=1) if out else np.zeros((self.size, 0), np.float32)
