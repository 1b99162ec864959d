"""A two-layer network on XOR, and what deleting or perturbing one weight does to each mapping.

The network is 2-H-1 (default H = 2, the classic minimal XOR net): ``tanh`` hidden units, a
sigmoid output, trained full-batch on the four mappings with binary cross-entropy and Adam.
Many networks (random initialisations) train at once as one stack (MLX). Then, for every
weight and bias of every network that learned XOR, one lesion at a time:

- **delete**: the weight set to 0;
- **perturb**: the weight halved (a change proportional to its size);

and each of the four mappings' *margin* — the output logit z signed towards its target,
``z·(2·target − 1)`` — is compared with the intact network's. The margin, not |y − target|: a
trained sigmoid output sits in saturation, where a lesion that halves a mapping's margin barely
moves |y − target|. A mapping is *degraded* when it loses more than :data:`DEGRADED` of its
margin, and *flips* when its margin turns negative (the output crosses 0.5). The question (the
superposition picture of a distributed code): does a lesion degrade every mapping a little, or
break one mapping and leave the others alone?

Inputs are coded ``binary`` ({0, 1}, the textbook form) or ``signed`` ({−1, +1}). With binary
inputs a first-layer weight is multiplied by 0 for the inputs where its input is 0, so it
*cannot* touch those mappings: the coding decides part of the answer, hence both.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from .toy import seed_stream

TARGETS = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
"""XOR of the inputs in :func:`inputs` order: 00, 01, 10, 11."""
MAPPINGS = ("00→0", "01→1", "10→1", "11→0")
CODINGS = ("binary", "signed")
LESIONS = ("delete", "perturb")
LEARNED_MARGIN = 0.4
"""A network learned XOR when every output is within this of its target (on the right side of 0.5)."""
DEGRADED = 0.05
"""A mapping counts as degraded by a lesion when it loses more than this fraction of its margin."""


def inputs(coding: str) -> np.ndarray:
    """``[4, 2]``: the four input pairs in the given coding."""
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    if coding == "binary":
        return bits
    if coding == "signed":
        return 2 * bits - 1
    raise ValueError(f"unknown input coding {coding!r} (choose {', '.join(CODINGS)})")


def weight_names(hidden: int) -> list[str]:
    """Names of the flat parameter vector: ``w1[i→h]``, ``b1[h]``, ``w2[h→y]``, ``b2``."""
    return ([f"w1[x{i}→h{h}]" for i in range(2) for h in range(hidden)] + [f"b1[h{h}]" for h in range(hidden)]
            + [f"w2[h{h}→y]" for h in range(hidden)] + ["b2"])


def unflatten(theta: np.ndarray, hidden: int) -> tuple[np.ndarray, ...]:
    """``theta [..., P]`` → (w1 ``[..., 2, H]``, b1 ``[..., H]``, w2 ``[..., H]``, b2 ``[...]``)."""
    h = hidden
    w1 = theta[..., : 2 * h].reshape(*theta.shape[:-1], 2, h)
    return w1, theta[..., 2 * h: 3 * h], theta[..., 3 * h: 4 * h], theta[..., 4 * h]


def logits_numpy(theta: np.ndarray, x: np.ndarray, hidden: int) -> np.ndarray:
    """Output logits ``[..., 4]`` of networks ``theta [..., P]`` on inputs ``x [4, 2]``."""
    w1, b1, w2, b2 = unflatten(theta, hidden)
    hid = np.tanh(np.einsum("bi,...ih->...bh", x, w1) + b1[..., None, :])  # [..., 4, H]
    return np.einsum("...bh,...h->...b", hid, w2) + b2[..., None]


def margins(logits: np.ndarray) -> np.ndarray:
    """``[..., 4]``: each mapping's logit signed towards its target (> 0: right side of 0.5)."""
    return logits * (2.0 * TARGETS - 1.0)


def train_networks(count: int, hidden: int, coding: str, seed: int, steps: int = 2000, lr: float = 0.05) -> np.ndarray:
    """Train ``count`` networks from independent initialisations; returns their flat weights ``[count, P]``."""
    rng = seed_stream(seed, f"xor/{coding}/{hidden}")
    n_params = 4 * hidden + 1
    params = {"theta": mx.array(rng.normal(0.0, 1.0, size=(count, n_params)).astype(np.float32))}
    x = mx.array(inputs(coding))
    y = mx.array(TARGETS)

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = params["theta"]  # [count, P]

        def __call__(self):
            h = hidden
            w1 = self.theta[:, : 2 * h].reshape(-1, 2, h)
            hid = mx.tanh(x[None] @ w1 + self.theta[:, None, 2 * h: 3 * h])  # [count, 4, H]
            return (hid * self.theta[:, None, 3 * h: 4 * h]).sum(-1) + self.theta[:, 4 * h: 4 * h + 1]  # logits [count, 4]

    nets = Nets()
    optimizer = optim.Adam(learning_rate=lr)

    def loss_fn(model):
        return nn.losses.binary_cross_entropy(model(), mx.broadcast_to(y, (count, 4)), reduction="sum") / 4

    loss_and_grad = nn.value_and_grad(nets, loss_fn)
    state = [nets.state, optimizer.state]

    @functools.partial(mx.compile, inputs=state, outputs=state)
    def step():
        loss, grads = loss_and_grad(nets)
        optimizer.update(nets, grads)
        return loss

    for _ in range(steps):
        mx.eval(step(), state)
    return np.array(nets.theta)


def lesion_table(theta: np.ndarray, coding: str, hidden: int) -> dict:
    """For one network: intact margins and, per lesion and weight, the lesioned margins and the
    relative margin loss per mapping (``[P, 4]``; > 0: degraded, > 1: flipped)."""
    x = inputs(coding)
    base = margins(logits_numpy(theta, x, hidden))  # [4], all > 0 for a network that learned XOR
    out = {"margins": base.tolist(), "lesions": {}}
    for lesion in LESIONS:
        variants = np.repeat(theta[None], theta.size, axis=0)  # [P, P]: row p has weight p lesioned
        idx = np.arange(theta.size)
        variants[idx, idx] = 0.0 if lesion == "delete" else theta * 0.5
        lesioned = margins(logits_numpy(variants, x, hidden))  # [P, 4]
        out["lesions"][lesion] = {"margins": lesioned.tolist(), "margin_loss": ((base - lesioned) / base).tolist()}
    return out


def summarize_lesions(tables: list[dict]) -> dict:
    """Across networks and weights, per lesion: how often every mapping degrades, how much of the
    damage the worst-hit mapping takes, how often a mapping flips."""
    out = {}
    for lesion in LESIONS:
        loss = np.concatenate([np.asarray(t["lesions"][lesion]["margin_loss"]) for t in tables])  # [N·P, 4]
        degraded = loss > DEGRADED
        damage = np.clip(loss, 0.0, None)
        total = damage.sum(axis=1)
        hit = total > DEGRADED
        share = damage.max(axis=1)[hit] / total[hit]  # 1/4: spread evenly; 1: one mapping takes it all
        out[lesion] = {
            "lesions": int(loss.shape[0]),
            "all_four_degrade": float(degraded.all(axis=1).mean()),
            "mappings_degraded_mean": float(degraded.sum(axis=1).mean()),
            "none_degrade": float((~degraded).all(axis=1).mean()),
            "some_improve": float((loss < -DEGRADED).any(axis=1).mean()),
            "largest_share_mean": float(share.mean()) if share.size else float("nan"),
            "flips_a_mapping": float((loss > 1.0).any(axis=1).mean()),
            "margin_loss_mean": float(loss.mean()),
        }
    return out


def run_xor(seed: int, hidden_sizes: tuple[int, ...] = (2, 8), networks: int = 32, steps: int = 1000,
            lr: float = 0.1) -> dict:
    """Every (coding, width): train ``networks`` nets, keep those that learned XOR, lesion every weight."""
    variants = []
    for hidden in hidden_sizes:
        for coding in CODINGS:
            thetas = train_networks(networks, hidden, coding, seed, steps, lr)
            outputs = 1.0 / (1.0 + np.exp(-logits_numpy(thetas, inputs(coding), hidden)))  # [N, 4]
            learned = np.abs(outputs - TARGETS).max(axis=1) < LEARNED_MARGIN
            tables = [lesion_table(t, coding, hidden) for t in thetas[learned]]
            variants.append({
                "coding": coding, "hidden": hidden, "weights": weight_names(hidden), "trained": networks,
                "learned": int(learned.sum()),
                "example": {"theta": thetas[learned][0].tolist(), **tables[0]} if tables else None,
                "summary": summarize_lesions(tables) if tables else None,
            })
    return {"mappings": list(MAPPINGS), "variants": variants}


__all__ = ["CODINGS", "LESIONS", "MAPPINGS", "TARGETS", "inputs", "lesion_table", "logits_numpy", "margins", "run_xor",
           "summarize_lesions", "train_networks", "weight_names"]
