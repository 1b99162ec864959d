"""Digits for the auxiliary-logit experiment: scikit-learn's 8×8 digits, or MNIST IDX files.

Both come out as a :class:`Dataset` of float32 pixels scaled to [−1, 1] (the range of the
uniform noise the students are trained on) and int32 labels 0–9.

**scikit-learn's digits** (1,797 images, 8×8, grey levels 0–16): read straight from the CSV
file the scikit-learn distribution ships (``sklearn/datasets/data/digits.csv.gz``, found with
``importlib.metadata``) rather than through ``sklearn.datasets.load_digits``: that import
pulls in SciPy and scikit-learn's own thread-pool set-up (a second second of start-up and a
second BLAS in a process that runs MLX) for what is one small CSV file. Where the
distribution's file list is unavailable (a frozen bundle) we fall back to ``load_digits``.
The split is fixed (a seeded permutation; 360 test digits), the same for every seed.

**MNIST** from the Hugging Face Hub (parquet, cached like a model): :mod:`.mnist_hub`.

**MNIST** (``--mnist DIR``): a folder with the Hub's two parquet files, or the four standard IDX files, gzipped or not
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``; ``.idx3-ubyte`` spellings too). The IDX reader is a few lines of
NumPy written here because no installed library reads IDX (torchvision does, and is not a
dependency); every problem is an :class:`AuxDataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlx_hooks.errors import SymbiontError

DIGITS_FILE = "sklearn/datasets/data/digits.csv.gz"
DIGITS_TEST = 360
"""Test digits held out of scikit-learn's 1,797 (20%); the other 1,437 train the teacher."""
SPLIT_SEED = 20250722


class AuxDataError(SymbiontError):
    """A data file that is missing, truncated or not what it should be (names the file)."""


@dataclass
class Dataset:
    name: str
    """``digits`` or ``mnist``."""
    x_train: np.ndarray
    """``[N, D]`` float32 in [−1, 1] (D = 64 for digits, 784 for MNIST)."""
    y_train: np.ndarray
    """``[N]`` int32 in 0..9."""
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    """Where it came from (a path), for the report."""
    fingerprint: str
    """Hash of the pixels and labels: a resumed run checks it has the same data."""

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _digits_table() -> tuple[np.ndarray, str]:
    """scikit-learn's digits as a ``[1797, 65]`` table (64 pixels 0–16, then the label)."""
    from importlib import metadata

    try:
        files = metadata.files("scikit-learn") or []
        path = next((Path(f.locate()) for f in files if str(f).replace("\\", "/") == DIGITS_FILE), None)
    except metadata.PackageNotFoundError:
        path = None
    if path is not None and path.is_file():
        try:
            with gzip.open(path, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
        except (OSError, ValueError, EOFError) as exc:
            raise AuxDataError(f"{path}: unreadable scikit-learn digits file ({exc})") from None
        return table, str(path)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise AuxDataError("scikit-learn is not installed: it ships the 8×8 digits "
                           "(pip install scikit-learn), or pass --mnist DIR") from None
    bunch = load_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1).astype(np.float32), "sklearn.datasets.load_digits"


def load_digits_dataset() -> Dataset:
    table, source = _digits_table()
    if table.ndim != 2 or table.shape[1] != 65:
        raise AuxDataError(f"{source}: expected 65 columns (64 pixels and a label), got shape {table.shape}")
    x = table[:, :64] / 8.0 - 1.0  # grey levels 0..16 -> [-1, 1]
    y = table[:, 64].astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
    return Dataset("digits", x[train], y[train], x[test], y[test], source, _fingerprint(x, y, order))


# -- MNIST IDX ---------------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file (gzipped when its first bytes say so) as a NumPy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuxDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise AuxDataError(f"{path}: truncated or corrupt gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise AuxDataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise AuxDataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimension(s))")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != need:
        what = "truncated" if len(body) < need else "has trailing bytes"
        raise AuxDataError(f"{path}: {what}: header says shape {shape} ({need} bytes of data), file has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped if ``path`` ends in ``.gz`` (tests, tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    from mlx_hooks.atomic_io import atomic_write_bytes

    atomic_write_bytes(path, gzip.compress(data) if str(path).endswith(".gz") else data)


MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise AuxDataError(f"{folder}: no {names[0]}[.gz] (the standard MNIST IDX files: "
                       + ", ".join(n[0] for n in MNIST_FILES.values()) + "; or train*.parquet and test*.parquet)")


def load_mnist_dataset(folder: str | os.PathLike) -> Dataset:
    """MNIST from a folder of IDX files, or of one ``train*.parquet`` and one ``test*.parquet``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AuxDataError(f"{folder}: not a folder (--mnist takes the folder holding the MNIST IDX or parquet files)")
    from .mnist_hub import load_mnist_parquet_dataset, parquet_splits

    if parquet_splits(folder) is not None:
        return load_mnist_parquet_dataset(folder)
    paths = {key: _find(folder, names) for key, names in MNIST_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if images.ndim != 3:
            raise AuxDataError(f"{paths[f'x_{part}']}: expected images [N, rows, cols], got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise AuxDataError(f"{paths[f'y_{part}']}: expected {len(images)} labels, got shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise AuxDataError(f"{paths[f'y_{part}']}: labels outside 0..9")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise AuxDataError(f"{paths['x_test']}: image size {arrays['x_test'].shape[1:]} differs from the "
                           f"training images' {arrays['x_train'].shape[1:]}")

    def pixels(a: np.ndarray) -> np.ndarray:
        return (a.reshape(len(a), -1).astype(np.float32) / 127.5 - 1.0)  # 0..255 -> [-1, 1]

    x_train, x_test = pixels(arrays["x_train"]), pixels(arrays["x_test"])
    y_train, y_test = arrays["y_train"].astype(np.int32), arrays["y_test"].astype(np.int32)
    return Dataset("mnist", x_train, y_train, x_test, y_test, str(folder),
                   _fingerprint(x_train, y_train, x_test, y_test))


def load_dataset(mnist: str | os.PathLike | None = None) -> Dataset:
    """MNIST from ``mnist`` when given, else scikit-learn's digits."""
    return load_mnist_dataset(mnist) if mnist else load_digits_dataset()


__all__ = ["AuxDataError", "Dataset", "load_dataset", "load_digits_dataset", "load_mnist_dataset",
           "read_idx", "write_idx"]
