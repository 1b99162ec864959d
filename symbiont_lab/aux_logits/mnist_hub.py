"""MNIST from the Hugging Face Hub: the public ``ylecun/mnist`` dataset repo, in parquet.

The repo holds two parquet files (``mnist/train-00000-of-00001.parquet``, 60,000 rows, and
``mnist/test-00000-of-00001.parquet``, 10,000 rows), each row an ``image`` (a struct whose
``bytes`` are one 28×28 greyscale PNG) and a ``label`` (0–9). They are fetched into the
Hugging Face cache like a model (huggingface-hub's ``snapshot_download`` with
``repo_type="dataset"``), so a second run, or an offline one after the first, reads the
cache and touches no network.

The same reader takes any folder with a ``train*.parquet`` and a ``test*.parquet`` in that
layout (``--mnist DIR``). Parquet is read with pyarrow and the PNGs decoded with Pillow,
both imported only here. Every problem is an :class:`~symbiont_lab.aux_logits.data.AuxDataError`
naming the file, or a :class:`~mlx_hooks.errors.HubAccessError` naming the repo.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Callable

import numpy as np

from mlx_hooks.errors import DownloadCancelled, HubAccessError
from mlx_hooks.hub_progress import DownloadProgress, ProgressTracker

from .data import AuxDataError, Dataset, _fingerprint

MNIST_REPO = "ylecun/mnist"
"""The dataset repo on the Hub (public, not gated)."""
MNIST_PARQUET = {"train": "mnist/train-00000-of-00001.parquet", "test": "mnist/test-00000-of-00001.parquet"}
"""The files of :data:`MNIST_REPO` that the lab reads, by split."""
IMAGE_SIDE = 28


def cached_mnist(repo_id: str = MNIST_REPO) -> Path | None:
    """The cached snapshot holding both parquet files, or None. No network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(MNIST_PARQUET.values()),
                                        local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    return folder if all((folder / name).is_file() for name in MNIST_PARQUET.values()) else None


def fetch_mnist(repo_id: str = MNIST_REPO, on_progress: Callable[[DownloadProgress], None] | None = None,
                should_cancel: Callable[[], bool] | None = None) -> Path:
    """The snapshot folder with both parquet files: the cache first, else a download with progress.

    Raises ``HubAccessError`` (offline, unreachable, missing repo) and ``DownloadCancelled``.
    """
    folder = cached_mnist(repo_id)
    if folder is not None:
        return folder
    from huggingface_hub import snapshot_download

    from mlx_hooks.hub import _plain_http_transfers

    patterns = list(MNIST_PARQUET.values())
    try:
        # a dry run lists the files and their sizes: the bar's total before the first byte
        plan = snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, dry_run=True)
        missing = sum(int(info.file_size or 0) for info in plan if info.will_download)
        tracker = ProgressTracker(repo_id, missing, on_progress, should_cancel)
        tracker.check_cancel()
        _plain_http_transfers()
        tracker.step(final=True)
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns,
                                        tqdm_class=tracker.bar_class()))
        tracker.step(final=True)
    except (DownloadCancelled, HubAccessError):
        raise
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: one message naming the repo
        raise HubAccessError(f"{repo_id}: MNIST could not be fetched from the Hugging Face Hub "
                             f"({type(exc).__name__}: {exc})") from exc
    absent = [name for name in MNIST_PARQUET.values() if not (folder / name).is_file()]
    if absent:
        raise HubAccessError(f"{repo_id}: the download finished but {folder} lacks {', '.join(absent)}")
    return folder


def read_mnist_parquet(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One split as ``([N, 28, 28] uint8 images, [N] int32 labels)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        table = pq.read_table(path, columns=["image", "label"])
    except FileNotFoundError:
        raise AuxDataError(f"{path}: no such file") from None
    except (pa.ArrowInvalid, pa.ArrowException, OSError, KeyError) as exc:
        raise AuxDataError(f"{path}: not a readable MNIST parquet file with 'image' and 'label' columns ({exc})") from None
    labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False))
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise AuxDataError(f"{path}: the 'label' column holds values outside 0..9 (dtype {labels.dtype})")
    images = np.empty((table.num_rows, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    column = table.column("image")
    for row, cell in enumerate(column.to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(data, (bytes, bytearray)):
            raise AuxDataError(f"{path}: row {row} has no image bytes (the 'image' column must hold PNG bytes "
                               "or a struct with a 'bytes' field)")
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert("L"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise AuxDataError(f"{path}: row {row}: the image does not decode ({exc})") from None
        if pixels.shape != (IMAGE_SIDE, IMAGE_SIDE):
            raise AuxDataError(f"{path}: row {row}: image of {pixels.shape[1]}×{pixels.shape[0]} pixels, "
                               f"MNIST's are {IMAGE_SIDE}×{IMAGE_SIDE}")
        images[row] = pixels
    return images, labels.astype(np.int32)


def parquet_splits(folder: str | os.PathLike) -> dict[str, Path] | None:
    """``{"train": path, "test": path}`` when ``folder`` holds one parquet file per split, else None."""
    folder = Path(folder)
    found = {}
    for split in ("train", "test"):
        candidates = sorted(folder.glob(f"{split}*.parquet")) + sorted(folder.glob(f"*/{split}*.parquet"))
        if len(candidates) > 1:
            raise AuxDataError(f"{folder}: several {split} parquet files ({', '.join(c.name for c in candidates)}); "
                               "the MNIST reader takes one file per split")
        if candidates:
            found[split] = candidates[0]
    if not found:
        return None
    if len(found) == 1:
        have = next(iter(found))
        raise AuxDataError(f"{folder}: a {have} parquet file but no {'test' if have == 'train' else 'train'} one")
    return found


def load_mnist_parquet_dataset(folder: str | os.PathLike, source: str | None = None) -> Dataset:
    """MNIST from a folder holding ``train*.parquet`` and ``test*.parquet`` (the Hub's layout included)."""
    splits = parquet_splits(folder)
    if splits is None:
        raise AuxDataError(f"{folder}: no train*.parquet and test*.parquet files")
    x_train, y_train = read_mnist_parquet(splits["train"])
    x_test, y_test = read_mnist_parquet(splits["test"])

    def pixels(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), -1).astype(np.float32) / 127.5 - 1.0  # 0..255 -> [-1, 1]

    x_train, x_test = pixels(x_train), pixels(x_test)
    return Dataset("mnist", x_train, y_train, x_test, y_test, source or str(folder),
                   _fingerprint(x_train, y_train, x_test, y_test))


DATA_CHOICES = ("auto", "mnist", "digits")
"""``auto``: MNIST from the cache or the Hub, else (offline) the 8×8 digits; ``mnist``: MNIST or
an error; ``digits``: scikit-learn's 8×8 digits, no network."""


def load_chosen_dataset(choice: str = "auto", mnist_dir: str | os.PathLike | None = None,
                        on_progress: Callable[[DownloadProgress], None] | None = None,
                        should_cancel: Callable[[], bool] | None = None,
                        say: Callable[[str], None] = lambda message: None, repo_id: str = MNIST_REPO) -> Dataset:
    """The lab's data set: a local MNIST folder when given, else by ``choice`` (see :data:`DATA_CHOICES`).

    ``say`` is told which data set is used and, when ``auto`` falls back, why.
    """
    from .data import load_digits_dataset, load_mnist_dataset

    if choice not in DATA_CHOICES:
        raise ValueError(f"data {choice!r}: one of {', '.join(DATA_CHOICES)}")
    if mnist_dir is not None:
        data = load_mnist_dataset(mnist_dir)
        say(f"data: MNIST from {mnist_dir}")
        return data
    if choice == "digits":
        say("data: scikit-learn's 8×8 digits (as asked)")
        return load_digits_dataset()
    missing = [name for name in ("pyarrow", "PIL") if importlib.util.find_spec(name) is None]
    if missing:
        why = f"reading MNIST's parquet files needs {' and '.join(missing)} (pip install pyarrow pillow)"
        if choice == "mnist":
            raise AuxDataError(why)
        say(f"data: scikit-learn's 8×8 digits, because {why}")
        return load_digits_dataset()
    try:
        folder = fetch_mnist(repo_id, on_progress, should_cancel)
    except HubAccessError as exc:
        if choice == "mnist":
            raise
        say(f"data: scikit-learn's 8×8 digits, because MNIST is not in the local Hugging Face cache and could "
            f"not be fetched ({exc}); the published setup is MNIST: run again online, or pass --mnist DIR")
        return load_digits_dataset()
    data = load_mnist_parquet_dataset(folder, source=f"{repo_id} (Hugging Face cache: {folder})")
    say(f"data: MNIST from {data.source}")
    return data


__all__ = ["DATA_CHOICES", "load_chosen_dataset", "MNIST_PARQUET", "MNIST_REPO", "cached_mnist", "fetch_mnist", "load_mnist_parquet_dataset",
           "parquet_splits", "read_mnist_parquet"]
