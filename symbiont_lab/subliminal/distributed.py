"""Data-parallel LoRA training of a student over several processes or machines.

mlx-lm's trainer already does the distributed part: under ``mlx.launch`` every process
joins the ``mx.distributed`` group, takes its own slice of each batch
(``iterate_batches(comm_group=...)``) and averages gradients before each update
(``mlx.nn.utils.average_gradients``), so every rank applies the same update and holds
the same adapters. This module is the per-process entry point plus a launcher:

    # two processes on this machine (ring backend over localhost):
    python -m symbiont_lab.subliminal.distributed --launch 2 \\
        --model default --data run/dataset --adapter-dir run/student --iters 100

    # several Macs: a hostfile made with `mlx.distributed_config` (ring over Ethernet/
    # Thunderbolt, or JACCL for RDMA over Thunderbolt 5), the same paths on every host:
    mlx.launch --hostfile hosts.json -- python -m symbiont_lab.subliminal.distributed \\
        --model mlx-community/Qwen2.5-7B-Instruct-4bit --data run/dataset --adapter-dir run/student

``batch_size`` is the global batch (split across ranks, so it must divide evenly).
Rank 0 writes the adapter folder and checkpoints (resume works as single-process);
``--save-every-rank`` makes each rank also write ``rank<k>.safetensors`` so the ranks'
adapters can be compared.

Every rank writes ``<adapter-dir>/rank<k>.json`` when it ends: its summary, or the error it
failed with. ``mlx.launch`` can exit 0 when a rank failed, so ``--launch`` does not trust its
exit status alone: it clears the old rank files, launches, and exits non-zero unless every
rank wrote a successful one (naming each rank that failed or never reported).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m symbiont_lab.subliminal.distributed",
                                description="Data-parallel LoRA student training (run under mlx.launch).")
    p.add_argument("--model", default="default", help="base model spec (default, a folder, a GGUF, a repo id)")
    p.add_argument("--data", required=True, help="folder with train.jsonl (and valid.jsonl)")
    p.add_argument("--adapter-dir", required=True)
    p.add_argument("--config", help="JSON file of LoRAConfig fields (flags below override it)")
    p.add_argument("--iters", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--runtime-dtype", default="auto", help="auto, stored (keep quantized: QLoRA), float32, ...")
    p.add_argument("--save-every-rank", action="store_true", help="each rank writes <adapter-dir>/rank<k>.safetensors")
    p.add_argument("--launch", type=int, metavar="N",
                   help="start N local processes with mlx.launch (ring backend on localhost) running this")
    return p


def _config(args):
    from .student import LoRAConfig

    fields = json.loads(Path(args.config).read_text()) if args.config else {}
    for name in ("iters", "batch_size", "learning_rate", "seed"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    return LoRAConfig.from_json(fields)


def launch_command(n: int, argv: list[str]) -> list[str]:
    """The ``mlx.launch`` command that runs this module in ``n`` local processes."""
    launcher = shutil.which("mlx.launch") or str(Path(sys.executable).with_name("mlx.launch"))
    if not Path(launcher).exists():
        raise FileNotFoundError("mlx.launch not found next to this Python; install mlx")
    return [launcher, "-n", str(n), "--backend", "ring", "--", sys.executable, "-m", "symbiont_lab.subliminal.distributed", *argv]


def run_rank(args) -> dict:
    """One process's work: train (mlx-lm averages gradients across the group), report."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_hooks.loader import load_model

    from .student import train_student

    group = mx.distributed.init()
    config = _config(args)
    if config.batch_size % group.size():
        raise SystemExit(f"batch size {config.batch_size} does not divide over {group.size()} processes")
    loaded = load_model(args.model, runtime_dtype=args.runtime_dtype)
    # Every rank checkpoints (so each can resume), but each into its own folder: in a shared one a
    # rank starting late read the other's checkpoint as its own resume point and failed.
    work_dir = Path(args.adapter_dir)
    if group.rank() > 0:
        work_dir = work_dir / f"rank{group.rank()}-work"
        work_dir.mkdir(parents=True, exist_ok=True)
    result = train_student(loaded, args.data, work_dir, config)
    if args.save_every_rank:
        from .student_checkpoint import _save_safetensors

        weights = dict(tree_flatten(loaded.model.trainable_parameters()))
        _save_safetensors(Path(args.adapter_dir) / f"rank{group.rank()}.safetensors", weights)
    summary = {"rank": group.rank(), "size": group.size(), "ok": True, "steps": result.steps_done,
               "first_loss": result.losses[0][1] if result.losses else None, "final_loss": result.final_loss}
    # On disk, not only on stdout: mlx.launch relays the ranks' stdout and can lose a line when a rank exits.
    write_rank_status(Path(args.adapter_dir), group.rank(), summary)
    print(json.dumps(summary), flush=True)
    return summary


def rank_status_path(adapter_dir: Path, rank: int) -> Path:
    return Path(adapter_dir) / f"rank{rank}.json"


def write_rank_status(adapter_dir: Path, rank: int, status: dict) -> None:
    from mlx_hooks.atomic_io import atomic_write_bytes

    atomic_write_bytes(rank_status_path(adapter_dir, rank), json.dumps(status).encode())


def rank_failures(adapter_dir: Path, n: int) -> list[str]:
    """What went wrong on each of ranks 0..n-1, from their status files (empty: all succeeded)."""
    problems = []
    for rank in range(n):
        path = rank_status_path(adapter_dir, rank)
        try:
            status = json.loads(path.read_text())
        except FileNotFoundError:
            problems.append(f"rank {rank}: never reported (killed, or failed before training started)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"rank {rank}: unreadable status {path} ({exc})")
            continue
        if not isinstance(status, dict) or status.get("ok") is not True:
            error = status.get("error") if isinstance(status, dict) else status
            problems.append(f"rank {rank}: failed: {error}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.launch:
        rest = []
        skip = False
        for i, a in enumerate(argv):  # drop --launch N from what the ranks get
            if skip:
                skip = False
                continue
            if a == "--launch":
                skip = True
                continue
            if a.startswith("--launch="):
                continue
            rest.append(a)
        adapter_dir = Path(args.adapter_dir)
        adapter_dir.mkdir(parents=True, exist_ok=True)
        for rank in range(args.launch):  # a stale status from an earlier launch must not count
            rank_status_path(adapter_dir, rank).unlink(missing_ok=True)
        code = subprocess.call(launch_command(args.launch, rest), env=os.environ.copy())
        problems = rank_failures(adapter_dir, args.launch)
        for line in problems:
            print(f"distributed: {line}", file=sys.stderr)
        if code == 0 and problems:
            code = 1  # mlx.launch said 0, a rank said otherwise
        return code
    try:
        run_rank(args)
    except BaseException as exc:  # noqa: BLE001 - recorded for the launcher, then re-raised
        import mlx.core as mx

        rank = mx.distributed.init().rank()
        write_rank_status(Path(args.adapter_dir), rank,
                          {"rank": rank, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
