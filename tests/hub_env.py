"""Point huggingface-hub at a local :class:`fake_hub.FakeHub` and a temporary HF_HOME.

huggingface-hub reads ``HF_ENDPOINT``/``HF_HOME`` into ``huggingface_hub.constants`` when it
is first imported (mlx-lm imports it before any test runs), so the in-process tests set
those constants; the environment variables are set too, for subprocesses (the CLI tests).
"""

from __future__ import annotations

from pathlib import Path

from fake_hub import FakeHub

TEST_CHUNK = 16 * 1024
"""huggingface-hub reads a body in 10 MiB chunks; the tiny models are ~0.5 MB, so the tests
use 16 KiB chunks to see (and cancel at) several chunks per file."""


def point_hub_at(hub: FakeHub, home: Path, monkeypatch, chunk: int = TEST_CHUNK) -> None:
    import huggingface_hub.constants as constants

    home.mkdir(parents=True, exist_ok=True)
    for name, value in {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": constants.HF_HUB_DISABLE_XET,  # restored after the test (mlx_hooks.hub sets it)
        "DOWNLOAD_CHUNK_SIZE": chunk,
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)


def leftovers(home: Path) -> list[Path]:
    """Partial files huggingface-hub left in the cache (it must leave none)."""
    return sorted(p for p in (home / "hub").rglob("*") if p.name.endswith(".incomplete"))


# -- fixtures shared by the hub test modules (import them: `from hub_env import home, hub, tiny_repo_folder`) --
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_repo_folder(tmp_path_factory):
    """A tiny llama folder, served as the repo ``org/tiny``."""
    from tiny_models import save_model_folder

    return save_model_folder(tmp_path_factory.mktemp("hub-tiny-llama"), "llama")


@pytest.fixture
def home(tmp_path):
    return tmp_path / "hf-home"


@pytest.fixture
def hub(home, monkeypatch, tiny_repo_folder):
    from fake_hub import FakeRepo

    fake = FakeHub({"org/tiny": FakeRepo.from_folder(tiny_repo_folder)})
    point_hub_at(fake, home, monkeypatch)
    yield fake
    fake.stop()
