"""An SAE training run end to end, resumable: corpus → activations → training → evaluation.

Everything lives in one run folder: ``corpus_generated.jsonl`` (model-written part of
the built-in corpus), ``activations.f16`` + ``activations.json`` (the buffer),
``checkpoint/`` (trainer state), and at the end the SAE in SAELens format under
``sae/`` with ``training_record.json`` (config, seed, corpus, per-report metrics and
the held-out evaluation). Re-running the same command continues where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..atomic_io import atomic_write_bytes
from ..points import ModelAdapter
from .activations import extract_activations, token_windows
from .corpus import builtin_prompts, generate_texts, python_docs_texts, read_text_folder, split_held_out
from .evaluate import SAEEvaluation, evaluate_sae
from .model import SAE, SAEConfig
from .train import TopKTrainer, TrainConfig, TrainReport


@dataclass
class RunConfig:
    """What to train, on what."""

    hook_point: str = "resid_post.15"
    """Where the SAE reads the model."""
    corpus: str = "builtin"
    """``builtin`` or a folder of .txt/.jsonl files."""
    context_length: int = 128
    """Tokens per window when reading the corpus."""
    held_out_fraction: float = 0.1
    """Documents kept out of training, for the evaluation and feature records."""
    generated_tokens: int = 160
    """Tokens per prompt in the model-written part of the built-in corpus."""
    max_eval_windows: int = 64
    """Held-out windows used by the downstream evaluation."""
    sae_id: str = ""
    """Identifier recorded in the SAE (default: derived from model and hook point)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Trainer hyper-parameters (seed included)."""


def corpus_texts(run: RunConfig, loaded, run_dir: Path, should_stop=None, progress=None) -> list[str]:
    if run.corpus != "builtin":
        return read_text_folder(run.corpus)
    generated = generate_texts(
        loaded.model, loaded.tokenizer, builtin_prompts(), run_dir / "corpus_generated.jsonl",
        max_tokens=run.generated_tokens, seed=run.train.seed, should_stop=should_stop, progress=progress,
    )
    return python_docs_texts() + generated


def train_sae(
    loaded,
    run: RunConfig,
    run_dir: str | os.PathLike,
    on_report: Callable[[TrainReport], None] | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[SAE, SAEEvaluation | None]:
    """Run (or resume) a training run; returns the SAE and, if it finished, its evaluation.

    ``loaded`` is a :class:`~mlx_hooks.loader.LoadedModel`. ``on_stage(name, done, total)``
    reports the corpus and extraction stages; ``on_report`` the training steps.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = on_stage or (lambda *_: None)
    texts = corpus_texts(run, loaded, run_dir, should_stop, lambda a, b: stage("corpus", a, b))
    train_texts, held_texts = split_held_out(texts, run.held_out_fraction, run.train.seed)
    windows = token_windows(loaded.tokenizer, train_texts, run.context_length)
    d_in = ModelAdapter(loaded.model).width(run.hook_point)  # attn_z / mlp_hidden are not d_model wide
    buffer = extract_activations(
        loaded.model, windows, run.hook_point, run_dir, d_in, should_stop=should_stop,
        progress=lambda a, b: stage("activations", a, b),
    )
    if buffer.filled < buffer.n_rows:
        return None, None  # cancelled during extraction; the buffer resumes next time
    sae_config = SAEConfig(
        d_in=d_in, d_sae=run.train.d_sae, k=run.train.k, hook_point=run.hook_point,
        sae_id=run.sae_id or f"{loaded.name}/{run.hook_point}/topk-{run.train.d_sae}-k{run.train.k}",
        model_name=loaded.name, model_fingerprint=loaded.fingerprint.to_dict(), source_format="symbiont",
    )
    reports: list[dict] = []

    def report(r: TrainReport) -> None:
        reports.append(asdict(r))
        if on_report is not None:
            on_report(r)

    started = time.time()
    trainer = TopKTrainer(sae_config, run.train, buffer.open("r"), run_dir)
    sae = trainer.train(report, should_stop)
    if trainer.step < run.train.steps:
        return sae, None
    held = token_windows(loaded.tokenizer, held_texts, run.context_length)[: run.max_eval_windows]
    stage("evaluation", 0, 1)
    evaluation = evaluate_sae(loaded.model, sae, held)
    record = {
        "sae_id": sae.cfg.sae_id, "model": loaded.name, "fingerprint": loaded.fingerprint.to_dict(),
        "run_config": asdict(run), "corpus": {
            "kind": run.corpus, "documents": len(texts), "train_documents": len(train_texts),
            "held_out_documents": len(held_texts), "train_tokens": int(buffer.n_rows),
            "held_out_eval_tokens": evaluation.tokens, "sink_rows_left_out": round(trainer.outlier_fraction, 6),
        },
        "reports": reports, "evaluation": evaluation.to_dict(),
        "environment": {"mlx": mx.__version__, "device": str(mx.default_device()), "platform": platform.platform(),
                        "decode": trainer.decode},
        "train_seconds_this_session": round(time.time() - started, 1),
    }
    write_json_atomic(run_dir / "training_record.json", record)
    return sae, evaluation


def write_json_atomic(path: Path, data) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


def export_sae(
    sae: SAE,
    loaded,
    run: RunConfig,
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Save a finished run's SAE in SAELens format with its training record and feature
    records (top contexts on the held-out documents, promoted tokens, labels)."""
    from .features import build_feature_records
    from .formats import save_sae

    run_dir, out = Path(run_dir), Path(out)
    save_sae(sae, out)
    record = run_dir / "training_record.json"
    if record.exists():
        write_json_atomic(out / "training_record.json", json.loads(record.read_text()))
    texts = corpus_texts(run, loaded, run_dir)
    _, held_texts = split_held_out(texts, run.held_out_fraction, run.train.seed)
    build_feature_records(sae, loaded.model, loaded.tokenizer, held_texts, folder=out, progress=progress)
    return out
