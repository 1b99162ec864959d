"""ActivationRecorder: per-position history, host storage, budgets, rewinds."""

from __future__ import annotations

import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_hooks import ActivationRecorder, CacheConfig, MemoryBudgetError
from mlx_hooks.activation_cache import estimate_capture_bytes

D = 8


def _chunk(start: int, length: int, batch: int = 1, dtype=mx.float32) -> mx.array:
    """[B, L, D] whose values encode (row, position, feature): easy to check after slicing."""
    b = np.arange(batch)[:, None, None] * 1000
    p = np.arange(start, start + length)[None, :, None] * 10
    f = np.arange(D)[None, None, :] * 0.125
    return mx.array((b + p + f).astype(np.float32)).astype(dtype)


def _expected(positions, batch: int = 1) -> np.ndarray:
    positions = np.asarray(list(positions))
    return (np.arange(batch)[:, None, None] * 1000 + positions[None, :, None] * 10
            + np.arange(D)[None, None, :] * 0.125).astype(np.float32)


def test_chunks_stack_in_position_order():
    rec = ActivationRecorder()
    rec.record("resid_post.0", _chunk(0, 5), 0)  # prefill
    for p in range(5, 9):  # decode steps
        rec.record("resid_post.0", _chunk(p, 1), p)
    stacked = rec.stack("resid_post.0")
    assert stacked.shape == (1, 9, D)
    assert np.array_equal(np.array(stacked), _expected(range(9)))
    assert np.array_equal(rec.positions("resid_post.0"), np.arange(9))
    assert rec.points == ["resid_post.0"]
    assert (rec.start, rec.end) == (0, 9)


def test_positions_start_where_recording_started():
    rec = ActivationRecorder()
    rec.record("embed", _chunk(12, 3), 12)
    rec.record("embed", _chunk(15, 1), 15)
    assert rec.positions("embed").tolist() == [12, 13, 14, 15]
    assert rec.positions("missing").tolist() == []
    assert (rec.start, rec.end) == (12, 16)


def test_at_returns_one_position_of_every_row():
    rec = ActivationRecorder()
    rec.record("p", _chunk(0, 4, batch=2), 0)
    rec.record("p", _chunk(4, 1, batch=2), 4)
    for position in range(5):
        got = np.array(rec.at("p", position))
        assert got.shape == (2, D)
        assert np.array_equal(got, _expected([position], batch=2)[:, 0])
    with pytest.raises(KeyError, match="position 5"):
        rec.at("p", 5)
    with pytest.raises(KeyError):
        rec.at("other", 0)
    with pytest.raises(KeyError, match="no activations captured for 'other'"):
        rec.stack("other")


def test_several_points_are_independent():
    rec = ActivationRecorder()
    rec.record("a", _chunk(0, 3), 0)
    rec.record("b", _chunk(0, 3) * 2, 0)
    rec.record("a", _chunk(3, 1), 3)
    assert rec.positions("a").tolist() == [0, 1, 2, 3]
    assert rec.positions("b").tolist() == [0, 1, 2]
    assert np.array_equal(np.array(rec.stack("b")), 2 * _expected(range(3)))
    rec.clear()
    assert rec.points == [] and rec.nbytes == 0 and rec.end == 0


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_host_storage_holds_numpy_and_reads_back_bit_exact(dtype):
    rec = ActivationRecorder(CacheConfig(storage="host"))
    rng = np.random.default_rng(0)
    parts = [mx.array(rng.standard_normal((1, n, D)).astype(np.float32)).astype(dtype) for n in (4, 1, 1)]
    start = 0
    for part in parts:
        rec.record("resid_post.1", part, start)
        start += part.shape[1]
    rec.settle()
    assert all(isinstance(c.data, np.ndarray) for c in rec._chunks["resid_post.1"])
    stacked = rec.stack("resid_post.1")
    assert stacked.dtype == dtype
    expected = mx.concatenate(parts, axis=1)
    assert np.array_equal(np.array(stacked.view(mx.uint16 if dtype != mx.float32 else mx.uint32)),
                          np.array(expected.view(mx.uint16 if dtype != mx.float32 else mx.uint32)))
    assert rec.at("resid_post.1", 5).dtype == dtype
    assert np.array_equal(np.array(rec.at("resid_post.1", 4).astype(mx.float32)),
                          np.array(parts[1][:, 0].astype(mx.float32)))
    assert rec.nbytes == 6 * D * dtype.size


def test_device_storage_keeps_mlx_arrays():
    rec = ActivationRecorder()
    rec.record("p", _chunk(0, 2), 0)
    rec.settle()
    assert isinstance(rec._chunks["p"][0].data, mx.array)


def test_budget_error_names_the_numbers():
    budget = 2**20  # 1 MiB
    rec = ActivationRecorder(CacheConfig(budget_bytes=budget, on_budget="error"))
    rec.record("a", mx.zeros((1, 100, 1024)), 0)  # 0.39 MiB: fits
    with pytest.raises(MemoryBudgetError) as info:
        rec.record("b", mx.zeros((1, 200, 1024)), 0)  # 1.17 MiB in all
    message = str(info.value)
    assert "1.2 MiB" in message and "1.0 MiB" in message
    assert re.search(r"\d+\.\d MiB captured exceeds the budget of \d+\.\d MiB", message)
    assert "drop_oldest" in message


def test_drop_oldest_keeps_the_newest_positions_within_budget():
    per_position = D * 4
    budget = 2 * 4 * per_position  # two points, four positions each
    rec = ActivationRecorder(CacheConfig(budget_bytes=budget, on_budget="drop_oldest"))
    for point in ("a", "b"):
        rec.record(point, _chunk(0, 3), 0)
    for p in range(3, 7):
        for point in ("a", "b"):
            rec.record(point, _chunk(p, 1), p)
            assert rec.nbytes <= budget
    for point in ("a", "b"):
        assert rec.positions(point).tolist() == [3, 4, 5, 6]
        assert np.array_equal(np.array(rec.stack(point)), _expected(range(3, 7)))
    assert rec.start == 3 and rec.end == 7
    assert rec.nbytes == budget
    with pytest.raises(KeyError):
        rec.at("a", 2)


def test_drop_oldest_forgets_the_globally_oldest_position_first():
    rec = ActivationRecorder(CacheConfig(budget_bytes=6 * D * 4, on_budget="drop_oldest"))
    rec.record("a", _chunk(0, 4), 0)
    rec.record("b", _chunk(2, 2), 2)  # b starts later: 6 positions in all, fits
    assert rec.nbytes == 6 * D * 4
    rec.record("a", _chunk(4, 1), 4)  # only a holds position 0: a loses it, b keeps all
    assert rec.positions("a").tolist() == [1, 2, 3, 4]
    assert rec.positions("b").tolist() == [2, 3]
    rec.record("b", _chunk(4, 1), 4)
    assert rec.positions("a").tolist() == [2, 3, 4]
    assert rec.positions("b").tolist() == [2, 3, 4]
    assert rec.start == 2


def test_drop_oldest_trims_a_chunk_larger_than_the_budget():
    rec = ActivationRecorder(CacheConfig(budget_bytes=3 * D * 4, on_budget="drop_oldest"))
    rec.record("a", _chunk(0, 10), 0)
    assert rec.positions("a").tolist() == [7, 8, 9]
    assert np.array_equal(np.array(rec.stack("a")), _expected(range(7, 10)))


def test_drop_oldest_with_host_storage_still_moves_everything_to_host():
    rec = ActivationRecorder(CacheConfig(storage="host", budget_bytes=3 * D * 4, on_budget="drop_oldest"))
    rec.record("a", _chunk(0, 5), 0)  # trimmed to 2..4 before it is settled
    rec.record("a", _chunk(5, 1), 5)
    rec.settle()
    assert rec.positions("a").tolist() == [3, 4, 5]
    assert all(isinstance(c.data, np.ndarray) for c in rec._chunks["a"])
    assert np.array_equal(np.array(rec.stack("a")), _expected(range(3, 6)))


def test_rerecording_an_earlier_position_replaces_later_history():
    rec = ActivationRecorder()
    rec.record("p", _chunk(0, 5), 0)
    rec.record("p", _chunk(5, 1), 5)
    rec.record("p", _chunk(6, 1), 6)
    new = _chunk(3, 2) + 0.5  # the cache was rewound to position 3
    rec.record("p", new, 3)
    assert rec.positions("p").tolist() == [0, 1, 2, 3, 4]
    got = np.array(rec.stack("p"))
    assert np.array_equal(got[:, :3], _expected(range(3)))
    assert np.array_equal(got[:, 3:], _expected(range(3, 5)) + 0.5)
    assert np.array_equal(np.array(rec.at("p", 4)), _expected([4])[:, 0] + 0.5)
    with pytest.raises(KeyError):
        rec.at("p", 6)
    rec.record("p", _chunk(0, 1) - 1, 0)  # back to the very start
    assert rec.positions("p").tolist() == [0]
    assert rec.end == 1


def test_rewind_with_host_storage_keeps_the_kept_prefix_on_host():
    rec = ActivationRecorder(CacheConfig(storage="host"))
    rec.record("p", _chunk(0, 6), 0)
    rec.record("p", _chunk(2, 1) + 0.25, 2)  # rewinds before the first chunk was settled
    rec.settle()
    assert all(isinstance(c.data, np.ndarray) for c in rec._chunks["p"])
    got = np.array(rec.stack("p"))
    assert np.array_equal(got[:, :2], _expected(range(2)))
    assert np.array_equal(got[:, 2:], _expected([2]) + 0.25)


def test_estimate_capture_bytes():
    assert estimate_capture_bytes(3, 100, 64, mx.float32) == 3 * 100 * 64 * 4
    assert estimate_capture_bytes(2, 10, 8, mx.bfloat16, batch=4) == 2 * 10 * 8 * 2 * 4


@pytest.mark.parametrize("storage", ["device", "host"])
def test_the_budget_holds_for_the_memory_actually_held(storage):
    """A slice is a view: a 4096-position prefill trimmed to fit used to keep the whole 16 MiB chunk
    alive while the cache counted 1 MiB. Trimmed chunks are copies now: measured, not just counted."""
    import gc

    budget = 2**20
    rec = ActivationRecorder(CacheConfig(storage=storage, budget_bytes=budget, on_budget="drop_oldest"))
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    prefill = mx.random.normal((1, 4096, 1024))  # 16 MiB
    mx.eval(prefill)
    rec.record("a", prefill, 0)
    del prefill
    rec.settle()
    gc.collect()
    assert rec.nbytes <= budget and rec.positions("a").tolist() == list(range(4096 - 256, 4096))
    held_device = mx.get_active_memory() - before
    if storage == "device":
        assert held_device <= budget + 4096, held_device  # was 16 MiB
    else:
        assert held_device <= 4096, held_device
        chunk = rec._chunks["a"][0].data
        assert chunk.base is None or chunk.base.nbytes <= budget  # owns its memory, not a view of 16 MiB


def test_a_refused_record_keeps_nothing():
    rec = ActivationRecorder(CacheConfig(budget_bytes=4 * D * 4, on_budget="error"))
    rec.record("a", _chunk(0, 3), 0)
    with pytest.raises(MemoryBudgetError):
        rec.record("a", _chunk(3, 2), 3)
    assert rec.positions("a").tolist() == [0, 1, 2] and rec.nbytes == 3 * D * 4


def test_a_budget_below_one_position_is_refused_by_name():
    rec = ActivationRecorder(CacheConfig(budget_bytes=D * 4 - 1, on_budget="drop_oldest"))
    with pytest.raises(MemoryBudgetError, match="smaller than one position"):
        rec.record("a", _chunk(0, 3), 0)


@pytest.mark.parametrize("config", [CacheConfig(), CacheConfig(storage="host"), CacheConfig(budget_bytes=10**6)])
def test_record_forward_holds_what_one_record_per_point_holds(config):
    """The hooks hand a forward call's captures over in one call: appends, a rewound (overlapping)
    call and a new point must leave the same history, bytes and positions as separate records."""
    one_by_one, together = ActivationRecorder(config), ActivationRecorder(config)
    calls = [(0, {"a": _chunk(0, 4), "b": _chunk(0, 4) * 2}), (4, {"a": _chunk(4, 1), "b": _chunk(4, 1) * 2}),
             (2, {"a": _chunk(2, 1) + 9, "b": _chunk(2, 1) - 9, "c": _chunk(2, 1)})]
    for start, captures in calls:
        for point, x in captures.items():
            one_by_one.record(point, x, start)
        together.record_forward(captures, start)
        one_by_one.settle(), together.settle()
        assert together.nbytes == one_by_one.nbytes
        for point in one_by_one.points:
            assert together.positions(point).tolist() == one_by_one.positions(point).tolist()
            assert np.array_equal(np.array(together.stack(point)), np.array(one_by_one.stack(point)))
    assert together.positions("a").tolist() == [0, 1, 2] and together.positions("c").tolist() == [2]
