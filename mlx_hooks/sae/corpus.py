"""Text corpora for SAE training and feature records, all available offline.

The built-in corpus has two parts, both reproducible on any machine without a network:

1. **Python's own documentation**: the ``pydoc_data.topics`` module that every CPython
   ships (the language reference topics that ``help()`` shows, ~0.7 MB of English prose
   with code) — text a package ships, nothing downloaded.
2. **Model-written text**: the loaded model answers a broad, fixed list of prompts
   (stories, science, history, everyday life, feelings, animals, numbers, dialogue,
   instructions...) at temperature 0.8 from a fixed seed, with mlx-lm's batched
   generation. Generated once and cached as JSONL next to the SAE's training run, so a
   cancelled run resumes without regenerating.

User corpora: a folder of ``.txt`` files (one document each) and ``.jsonl`` files (one
``{"text": ...}`` object per line).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..atomic_io import atomic_write_bytes
from ..errors import SymbiontError

TOPICS = [
    "a lighthouse keeper", "a city at night", "the first day of school", "an old map", "a thunderstorm",
    "a robot learning to paint", "a lost cat", "the ocean floor", "a mountain village", "a busy kitchen",
    "a chess tournament", "a desert journey", "a music festival", "a library after closing", "a train station",
    "a garden in spring", "an owl in the forest", "a spaceship crew", "a bakery", "a winter morning",
]
SUBJECTS = [
    "photosynthesis", "black holes", "the French Revolution", "how vaccines work", "the water cycle",
    "compound interest", "the Roman Empire", "volcanoes", "how computers store numbers", "plate tectonics",
    "the human heart", "electricity", "the printing press", "climate and weather", "honeybees",
    "prime numbers", "the Moon landing", "DNA", "how airplanes fly", "the Silk Road",
]
TASKS = [
    "Write a short story about {topic}.",
    "Describe {topic} in vivid detail.",
    "Write a poem about {topic}.",
    "Write a dialogue between two friends about {topic}.",
    "Explain {subject} to a twelve-year-old.",
    "Give three surprising facts about {subject}.",
    "Write a short encyclopedia entry on {subject}.",
    "What are common misconceptions about {subject}?",
]
EXTRA_PROMPTS = [
    "List ten animals and one fact about each.", "Write a recipe for vegetable soup.",
    "How do I change a flat bicycle tire?", "Write a polite email declining a meeting.",
    "What is your favourite animal and why?", "Continue the sequence: 3, 7, 11, 15, ...",
    "Write a Python function that reverses a string, and explain it.", "Translate 'good morning' into five languages.",
    "Describe how you feel on a rainy Sunday.", "Write a product review of a pair of running shoes.",
    "Summarise the plot of a fairy tale you know.", "Give advice to someone starting their first job.",
    "What happens when you mix baking soda and vinegar?", "Write a news report about a local football match.",
    "Write a letter from a sailor to his family.", "Explain the rules of tic-tac-toe.",
    "Count from one to twenty in words.", "Describe the colours of a sunset.",
    "Write a limerick about a forgetful wizard.", "What is the difference between weather and climate?",
]


def builtin_prompts() -> list[str]:
    """The fixed prompt list of the model-written part (180 prompts)."""
    prompts = []
    for task in TASKS:
        if "{topic}" in task:
            prompts += [task.format(topic=t) for t in TOPICS]
        else:
            prompts += [task.format(subject=s) for s in SUBJECTS]
    return prompts[:160] + EXTRA_PROMPTS


def python_docs_texts() -> list[str]:
    """The language-reference topics shipped with CPython (``pydoc_data.topics``)."""
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics) if len(topics[name].strip()) > 200]


def read_text_folder(folder: str | os.PathLike) -> list[str]:
    """Documents from ``*.txt`` (whole file) and ``*.jsonl`` (``text`` field per line)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SymbiontError(f"{folder}: not a folder of .txt/.jsonl files")
    texts: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".txt":
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise SymbiontError(f"{path}: not UTF-8 text ({exc})") from exc
        elif path.suffix == ".jsonl":
            texts += read_jsonl_texts(path)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SymbiontError(f"{folder}: no text found in .txt or .jsonl files")
    return texts


def read_jsonl_texts(path: Path) -> list[str]:
    """The ``text`` field of every line of a JSONL file (errors name the file and line)."""
    texts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SymbiontError(f"{path}:{number}: not valid JSON ({exc.msg}); truncated file?") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SymbiontError(f"{path}:{number}: expected an object with a string 'text' field")
            texts.append(record["text"])
    return texts


def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    cache_file: str | os.PathLike,
    max_tokens: int = 200,
    batch_size: int = 16,
    temp: float = 0.8,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Model-written texts for ``prompts``, cached in ``cache_file`` (JSONL, resumable).

    Uses mlx-lm's ``batch_generate``: batching is what makes this affordable on any
    backend. Each batch is appended atomically (rewrite to a temp file + rename), so a
    cancelled run keeps every finished batch.
    """
    import mlx.core as mx
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler

    from ..streams import generation_stream

    cache_file = Path(cache_file)
    done: dict[str, str] = {}
    if cache_file.exists():
        for record in map(json.loads, cache_file.read_text(encoding="utf-8").splitlines()):
            done[record["prompt"]] = record["text"]
    todo = [p for p in prompts if p not in done]
    for start in range(0, len(todo), batch_size):
        if should_stop is not None and should_stop():
            break
        batch = todo[start : start + batch_size]
        mx.random.seed(seed + len(done))
        encoded = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
            for p in batch
        ]
        result = batch_generate(model, tokenizer, encoded, max_tokens=max_tokens, sampler=make_sampler(temp=temp),
                                stream=generation_stream())  # the default device now (see mlx_hooks.streams)
        for prompt, text in zip(batch, result.texts):
            done[prompt] = text
        _write_jsonl_atomic(cache_file, [{"prompt": p, "text": done[p]} for p in prompts if p in done])
        if progress is not None:
            progress(len(done), len(prompts))
    return [done[p] for p in prompts if p in done]


def _write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    atomic_write_bytes(path, lines.encode("utf-8"))


def split_held_out(texts: Sequence[str], fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, held-out) split by document."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_held = max(1, int(round(len(texts) * fraction)))
    held = set(order[:n_held])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]
