"""MNIST for the auxiliary-logit lab: parquet files in the Hub's layout, fetched from a local
stand-in for the Hub (tests/fake_hub.py) with progress, read from the cache offline, and the
8×8 digits when the Hub cannot be reached. The parquet files are written here, MNIST-shaped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hub_env import home, point_hub_at  # noqa: F401 - fixture

from symbiont_lab.aux_logits.data import AuxDataError, load_mnist_dataset
from symbiont_lab.aux_logits.mnist_hub import (MNIST_PARQUET, MNIST_REPO, cached_mnist, load_chosen_dataset,
                                               read_mnist_parquet)


def mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n)


def parquet_bytes(images: np.ndarray, labels: np.ndarray, size: tuple[int, int] = (28, 28)) -> bytes:
    """A parquet file in the layout of the Hub's ``ylecun/mnist``: image {bytes, path} PNG, int64 label."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    cells = []
    for image in images:
        png = io.BytesIO()
        Image.fromarray(image).resize(size).save(png, format="PNG")
        cells.append({"bytes": png.getvalue(), "path": None})
    table = pa.table({"image": pa.array(cells, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "label": pa.array(labels, type=pa.int64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.fixture(scope="module")
def splits():
    return {"train": mnist_like(96, 1), "test": mnist_like(32, 2)}


@pytest.fixture(scope="module")
def repo_files(splits):
    return {MNIST_PARQUET[name]: parquet_bytes(*arrays) for name, arrays in splits.items()}


def test_parquet_folder_round_trips_pixels_and_labels(tmp_path, splits, repo_files):
    for name, data in repo_files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    images, labels = read_mnist_parquet(tmp_path / MNIST_PARQUET["train"])
    assert np.array_equal(images, splits["train"][0]) and np.array_equal(labels, splits["train"][1])
    data = load_mnist_dataset(tmp_path)  # the folder form of --mnist DIR finds the parquet pair
    assert data.name == "mnist" and data.x_train.shape == (96, 784) and data.x_test.shape == (32, 784)
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
    expected = splits["test"][0].reshape(32, -1).astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(data.x_test, expected) and np.array_equal(data.y_test, splits["test"][1])


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable MNIST parquet file"),
    (lambda b: b"PAR1" + b"\0" * 64, "not a readable MNIST parquet file"),
])
def test_a_damaged_parquet_file_is_named(tmp_path, repo_files, damage, message):
    path = tmp_path / "train-00000-of-00001.parquet"
    path.write_bytes(damage(repo_files[MNIST_PARQUET["train"]]))
    with pytest.raises(AuxDataError, match=message) as caught:
        read_mnist_parquet(path)
    assert str(path) in str(caught.value)


def test_wrong_image_size_and_labels_are_refused(tmp_path):
    images, labels = mnist_like(4, 3)
    path = tmp_path / "train.parquet"
    path.write_bytes(parquet_bytes(images, labels, size=(32, 32)))
    with pytest.raises(AuxDataError, match=r"row 0: image of 32×32 pixels, MNIST's are 28×28"):
        read_mnist_parquet(path)
    path.write_bytes(parquet_bytes(images, labels + 10))
    with pytest.raises(AuxDataError, match="outside 0..9"):
        read_mnist_parquet(path)
    (tmp_path / "test.parquet").unlink(missing_ok=True)
    with pytest.raises(AuxDataError, match="a train parquet file but no test one"):
        load_mnist_dataset(tmp_path)


def test_auto_downloads_from_the_hub_with_progress_then_reads_the_cache_offline(home, monkeypatch, repo_files, splits):
    import huggingface_hub.constants as constants
    from fake_hub import FakeHub, FakeRepo

    hub = FakeHub({MNIST_REPO: FakeRepo(dict(repo_files))})
    point_hub_at(hub, home, monkeypatch)
    try:
        steps, said = [], []
        data = load_chosen_dataset("auto", on_progress=steps.append, say=said.append)
        assert data.name == "mnist" and np.array_equal(data.y_train, splits["train"][1])
        total = sum(len(b) for b in repo_files.values())
        assert steps[0].done_bytes == 0 and steps[-1].done_bytes == total == steps[-1].total_bytes
        assert [s.done_bytes for s in steps] == sorted(s.done_bytes for s in steps)
        assert said == [f"data: MNIST from {data.source}"] and MNIST_REPO in data.source
        assert all(hub.full_gets(name) == 1 for name in repo_files)
    finally:
        hub.stop()
    # the Hub is gone and offline mode is on: the cache alone serves the same data
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cached_mnist() is not None
    again = load_chosen_dataset("mnist")
    assert again.fingerprint == data.fingerprint


def test_offline_auto_falls_back_to_digits_and_says_why(home, monkeypatch):
    import huggingface_hub.constants as constants
    from fake_hub import FakeHub

    from mlx_hooks.errors import HubAccessError

    hub = FakeHub({})
    point_hub_at(hub, home, monkeypatch)
    hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    said = []
    data = load_chosen_dataset("auto", say=said.append)
    assert data.name == "digits" and data.dim == 64
    assert len(said) == 1 and said[0].startswith("data: scikit-learn's 8×8 digits, because MNIST is not in the local")
    with pytest.raises(HubAccessError, match=MNIST_REPO):
        load_chosen_dataset("mnist")
    assert load_chosen_dataset("digits", say=said.append).fingerprint == data.fingerprint


def test_cli_runs_the_published_mnist_setup_from_a_parquet_folder(tmp_path, repo_files, capsys):
    import json

    from symbiont_app.cli import main

    folder = tmp_path / "mnist"
    for name, data in repo_files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    out = tmp_path / "run"
    args = ["lab", "aux-logits", "--mnist", str(folder), "--seeds", "1", "--aux", "3", "--hidden", "16",
            "--epochs", "1", "--out", str(out), "--no-plots"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"data: MNIST from {folder}" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["dataset"] == "mnist" and summary["settings"]["batch"] == 1024
    assert "| 3 | 1 |" in captured.out


def test_without_pyarrow_auto_says_so_and_uses_the_digits(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    said = []
    assert load_chosen_dataset("auto", say=said.append).name == "digits"
    assert "needs pyarrow" in said[0]
    with pytest.raises(AuxDataError, match="needs pyarrow"):
        load_chosen_dataset("mnist")
