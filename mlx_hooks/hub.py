"""Hugging Face repos, in the order a user can act on: resolve, estimate, verdict, download.

1. The local cache first (:func:`cached_snapshot`): a complete snapshot loads with no network.
2. :func:`plan_download`: the repo's file list and sizes, its ``config.json`` (small) and the
   tensor shapes/dtypes from its safetensors headers (``get_safetensors_metadata`` reads a
   header window of each weight file, never a whole one): enough for the memory estimate.
3. The caller's verdict: :func:`fetch_model` checks the estimate against the budget before
   any weight file is fetched.
4. :func:`download`: ``snapshot_download`` with progress steps (bytes, rate, ETA) and cancel.

Cancel: huggingface-hub 2.x has no cancel argument, so the ``tqdm_class`` it reports
through (:mod:`mlx_hooks.hub_progress`) raises ``DownloadCancelled`` from ``update()``; the
library's per-file temporary file is removed as the exception passes, the files already
complete stay in the cache, and the snapshot's tree listing (written before the first file)
lets the next run see what is missing and fetch only that. A file is resumed from its start:
huggingface-hub 2.x downloads each file to a process-unique temporary name and deletes it on
failure, so a partly fetched file is not kept.

Qt-free and MLX-free: it may run on any thread (the app runs it beside the engine thread).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import DownloadCancelled, HubAccessError
from .hub_progress import DownloadProgress, ProgressTracker, format_bytes
from .memory import MemoryEstimate, check_budget

MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
"""The files of a repo a model load needs (weights, config, tokenizer, chat template)."""
DOWNLOAD_WORKERS = 8
"""Files fetched at once (huggingface-hub's own default)."""
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(spec: str) -> bool:
    """``org/name`` that names no local file or folder: what the loader fetches from the Hub."""
    path = Path(spec).expanduser()
    return (bool(REPO_ID.match(spec)) and not spec.startswith((".", "/", "~"))
            and path.suffix.lower() != ".gguf" and not path.exists())


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int
    """Bytes (0 if the Hub did not say)."""
    cached: bool
    """Already in the local cache at this commit."""


@dataclass(frozen=True)
class HubPlan:
    """What a download will fetch, and what the estimate is made from (nothing of it is a weight)."""

    repo_id: str
    revision: str
    """A ``huggingface_hub.ResolvedRevision``: the branch asked for, pinned to one commit."""
    files: tuple[HubFile, ...]
    config: dict = field(compare=False)
    """The repo's ``config.json``."""
    tensors: dict = field(compare=False)
    """Tensor name -> (shape, safetensors dtype), from the weight files' headers."""

    @property
    def commit(self) -> str:
        return getattr(self.revision, "resolved", str(self.revision))

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def missing(self) -> tuple[HubFile, ...]:
        return tuple(f for f in self.files if not f.cached)

    @property
    def missing_bytes(self) -> int:
        return sum(f.size for f in self.missing)

    def describe(self) -> str:
        return (f"{self.repo_id}@{self.commit[:8]}: {len(self.files)} files, {format_bytes(self.total_bytes)}; "
                f"{format_bytes(self.missing_bytes)} to download")


def _complete(folder: Path) -> bool:
    """Whether a cached snapshot has its config and every weight shard.

    Backs up huggingface-hub's own check, which needs the tree listing a snapshot download
    writes first: a plan alone caches ``config.json`` (and a shard index) without it.
    """
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return any(folder.glob("*.safetensors"))


def cached_snapshot(repo_id: str, patterns: list[str] = MODEL_FILE_PATTERNS) -> Path | None:
    """The complete cached snapshot of ``repo_id``'s default branch, or None. No network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError  # IncompleteSnapshotError included

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    return folder if _complete(folder) else None


def hub_error(repo_id: str, exc: BaseException) -> HubAccessError:
    """One message per way a repo cannot be fetched, naming the repo and what to do."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    login = "log in with `hf auth login` (or set HF_TOKEN)"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.GatedRepoError):
        message = (f"a gated repo ({status}): accept its conditions on {constants.ENDPOINT}/{repo_id}, "
                   f"then {login} with the account that accepted them")
    elif isinstance(exc, hf.RevisionNotFoundError):
        message = "no such branch or commit on the Hugging Face Hub"
    elif isinstance(exc, hf.RepositoryNotFoundError):
        message = (f"no such model repo on the Hugging Face Hub ({status}), or it is private or gated and this "
                   f"machine is not logged in: check the name (org/name), or {login}")
    elif isinstance(exc, hf.HfHubHTTPError) and status == 401:
        message = f"the Hugging Face Hub refused the token (401): {login} again"
    elif isinstance(exc, hf.HfHubHTTPError) and status == 403:
        message = f"the Hugging Face Hub denied access (403): the token lacks read access to this repo; {login}"
    elif isinstance(exc, hf.RemoteEntryNotFoundError):
        message = (f"the repo has no {getattr(exc, 'filename', None) or 'config.json'} (not a transformers model "
                   "repo; for a GGUF repo, download the .gguf file and give its path)")
    elif isinstance(exc, hf.NotASafetensorsRepoError):
        message = ("the repo has no model.safetensors or model.safetensors.index.json: Symbiont loads safetensors "
                   "weights (or a .gguf file)")
    elif isinstance(exc, hf.SafetensorsParsingError):
        message = f"unreadable safetensors header ({exc})"
    elif isinstance(exc, (hf.OfflineModeIsEnabled, hf.RevisionResolutionError, hf.LocalEntryNotFoundError,
                          httpx2.TransportError, ConnectionError, TimeoutError)):
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        message = (f"not in the local Hugging Face cache and the Hub ({constants.ENDPOINT}) could not be "
                   f"reached{offline}: connect to the network and try again ({type(exc).__name__})")
    else:
        message = f"not in the local Hugging Face cache and could not be downloaded ({type(exc).__name__}: {exc})"
    return HubAccessError(f"{repo_id}: {message}")


def plan_download(repo_id: str, patterns: list[str] = MODEL_FILE_PATTERNS) -> HubPlan:
    """The repo's files (sizes, which are cached), config and tensor headers. Fetches no weight file."""
    from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi()
    try:
        revision = api.resolve_revision(repo_id)  # pins one commit for every call below; caches refs/main
        info = api.model_info(repo_id, revision=revision.resolved, files_metadata=True)
        config_path = hf_hub_download(repo_id, "config.json", revision=revision)  # small; the load needs it anyway
        metadata = api.get_safetensors_metadata(repo_id, revision=revision.resolved)
        # after the two reads above, which cache config.json (and a shard index): not counted as to download
        siblings = {s.rfilename: s for s in info.siblings or []}
        files = []
        for name in filter_repo_objects(list(siblings), allow_patterns=patterns):
            sibling = siblings[name]
            size = sibling.lfs.size if sibling.lfs is not None else (sibling.size or 0)
            cached = isinstance(try_to_load_from_cache(repo_id, name, revision=revision.resolved), str)
            files.append(HubFile(name, int(size), cached))
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: each gets its own message
        raise hub_error(repo_id, exc) from exc
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise HubAccessError(f"{repo_id}: config.json is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise HubAccessError(f"{repo_id}: config.json has no model_type (not a transformers model repo)")
    tensors = {name: (tuple(tensor.shape), tensor.dtype)
               for file in metadata.files_metadata.values() for name, tensor in file.tensors.items()}
    return HubPlan(repo_id, revision, tuple(files), config, tensors)


def _plain_http_transfers() -> None:
    """Fetch over HTTP rather than hf_xet, unless the user chose (``HF_HUB_DISABLE_XET`` set).

    Why: hf_xet (1.8) moves the bytes in Rust and reports through a callback that logs and
    swallows a Python exception ("Python exception updating progress"), so a cancel raised
    there would only land once the whole file is fetched. Over HTTP huggingface-hub reads
    the body in Python, chunk by chunk (``constants.DOWNLOAD_CHUNK_SIZE``, 10 MiB), and the
    cancel lands at the next chunk. Process-wide: huggingface-hub reads this flag per call.
    """
    from huggingface_hub import constants

    if "HF_HUB_DISABLE_XET" not in os.environ:
        constants.HF_HUB_DISABLE_XET = True


def download(plan: HubPlan, on_progress: Callable[[DownloadProgress], None] | None = None,
             should_cancel: Callable[[], bool] | None = None, patterns: list[str] = MODEL_FILE_PATTERNS,
             max_workers: int = DOWNLOAD_WORKERS) -> Path:
    """Fetch what ``plan`` says is missing; progress steps end at ``plan.missing_bytes``.

    Raises ``DownloadCancelled`` when ``should_cancel()`` turns true (checked at every chunk).
    """
    from huggingface_hub import snapshot_download

    tracker = ProgressTracker(plan.repo_id, plan.missing_bytes, on_progress, should_cancel)
    tracker.check_cancel()
    _plain_http_transfers()
    tracker.step(final=True)  # a 0-byte step: the bar appears before the first chunk
    try:
        folder = Path(snapshot_download(plan.repo_id, revision=plan.revision, allow_patterns=patterns,
                                        tqdm_class=tracker.bar_class(), max_workers=max_workers))
    except DownloadCancelled:
        raise
    except Exception as exc:  # noqa: BLE001
        raise hub_error(plan.repo_id, exc) from exc
    tracker.step(final=True)
    if not _complete(folder):
        raise HubAccessError(f"{plan.repo_id}: the download finished but {folder} lacks config.json or a weight shard")
    return folder


def fetch_model(repo_id: str, *, estimate: Callable[[HubPlan], MemoryEstimate] | None = None,
                budget_bytes: int | None = None, on_plan: Callable[[HubPlan, MemoryEstimate | None], None] | None = None,
                on_progress: Callable[[DownloadProgress], None] | None = None,
                should_cancel: Callable[[], bool] | None = None) -> Path:
    """The local folder of ``repo_id``: the cache if complete, else plan, check, download.

    ``estimate(plan)`` gives the memory the load will take (the loader's rule, on the
    headers); over ``budget_bytes`` raises ``MemoryBudgetError`` before a weight is fetched.
    ``on_plan(plan, estimate)`` is told the verdict's inputs before the check.
    """
    folder = cached_snapshot(repo_id)
    if folder is not None:
        return folder
    plan = plan_download(repo_id)
    memory = estimate(plan) if estimate is not None else None
    if on_plan is not None:
        on_plan(plan, memory)
    if memory is not None:
        check_budget(memory, budget_bytes, f"downloading {repo_id} (checked before fetching any weights)")
    if should_cancel is not None and should_cancel():
        raise DownloadCancelled(f"{repo_id}: download cancelled before it started")
    return download(plan, on_progress, should_cancel)
