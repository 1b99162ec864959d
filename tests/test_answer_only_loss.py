"""The LoRA loss that runs the head only at counted columns gives the full loss and gradients,
on every architecture family (the lab trains students of any of them)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from symbiont_lab.subliminal.student import answer_only_loss, answer_positions
from tiny_models import ARCHITECTURES, VOCAB, make_model

# (offset, length) per row of a [4, 41] batch: prompt + answer, a row filling the batch, a
# row longer than the columns (truncated by mlx-lm to the width), offset 0 (mask_prompt off).
LENGTHS = [(9, 24), (30, 41), (12, 41), (0, 17)]


def _batch(seed: int = 0) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(len(LENGTHS), 41)).astype(np.int32)
    for row, (_, length) in enumerate(LENGTHS):
        tokens[row, length:] = 0  # padding, as mlx-lm's iterator writes it
    return mx.array(tokens), mx.array(np.array(LENGTHS, dtype=np.int32))


def test_answer_positions_name_exactly_the_counted_columns():
    positions, weights = answer_positions(np.array(LENGTHS), width=40, bucket=16)
    assert positions.shape == weights.shape == (4, 32)  # longest count 29 (row 1), rounded up to 16
    for row, (offset, length) in enumerate(LENGTHS):
        counted = [j for j in range(40) if offset <= j + 1 < length]
        assert positions[row][weights[row] > 0].tolist() == counted
        assert set(positions[row].tolist()) <= set(counted)  # padding repeats a counted column
    assert answer_positions(np.array([(5, 5)]), width=8)[1].sum() == 0  # nothing counted, nothing weighted


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loss_and_gradients_equal_the_full_head(arch):
    model = make_model(arch)
    batch, lengths = _batch()
    positions, weights = (mx.array(a) for a in answer_positions(np.array(lengths), batch.shape[1] - 1))

    def full(m):
        return answer_only_loss(m, batch, lengths)[0]

    def sparse(m):
        return answer_only_loss(m, batch, lengths, positions, weights)[0]

    loss_full, grads_full = nn.value_and_grad(model, full)(model)
    loss_sparse, grads_sparse = nn.value_and_grad(model, sparse)(model)
    _, ntoks_full = answer_only_loss(model, batch, lengths)
    _, ntoks_sparse = answer_only_loss(model, batch, lengths, positions, weights)
    assert int(ntoks_sparse) == int(ntoks_full) == sum(length - max(offset, 1) for offset, length in LENGTHS)
    assert float(loss_sparse) == pytest.approx(float(loss_full), rel=1e-5)
    full_g, sparse_g = dict(tree_flatten(grads_full)), dict(tree_flatten(grads_sparse))
    assert full_g.keys() == sparse_g.keys()
    scale = max(float(mx.abs(g).max()) for g in full_g.values())
    worst = max(float(mx.abs(full_g[k] - sparse_g[k]).max()) for k in full_g)
    assert worst <= 1e-4 * scale, f"{arch}: gradient differs by {worst} (largest gradient {scale})"


def test_student_modules_import_in_either_order():
    import subprocess
    import sys

    for first, second in (("student_train", "student"), ("student", "student_train")):
        code = (f"import symbiont_lab.subliminal.{first}; import symbiont_lab.subliminal.{second}; "
                "from symbiont_lab.subliminal.student import train_student, load_student; "
                "from symbiont_lab.subliminal.student_train import train_student as t; assert t is train_student")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-800:]
