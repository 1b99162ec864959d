"""Symbiont against the peer libraries, on the same weights and the same token ids, in one run.

    python benchmarks/peers.py [--peers-python PATH] [--quick]

Four workloads; rounds alternate Symbiont and the peers so machine noise hits both alike,
and each figure is the best and the median over the rounds (higher is faster):
  forward   one 512-token forward capturing resid_pre + resid_post of every layer (60 points):
            mlx_hooks.hooked vs TransformerLens run_with_cache, transformers + forward hooks,
            nnsight trace with a .save() per point (tokens/s)
  generate  greedy tokens, resid_post of every layer captured per token: hooked_stream_generate
            vs TransformerLens generate inside hooks, transformers generate + forward hooks,
            nnsight generate (tokens/s)
  sae       TopK SAE training (d_sae 4608, k 32, batch 512) on the same stored resid_post
            activations: mlx_hooks.sae.train.TopKTrainer vs SAELens SAETrainer (tokens/s)
  lora      LoRA rank 8 on the 7 projections of every layer, batch 4, same chat data: the
            subliminal lab's trainer vs mlx_lm.lora's train_model (steps/s; both MLX, no torch)

The weights are the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) dequantized to float32
by Symbiont's loader and written as a Hugging Face llama folder for the peers; the peers'
logits on the 512 ids are compared with Symbiont's first. The peers run in a PyTorch
interpreter (--peers-python, else $SYMBIONT_PEERS_PYTHON, else this one if it has torch) as
the subprocess benchmarks/peers_torch.py, with torch's threads set to --threads. The last
line reads `ratios: sae=R lora=R generate=R forward=R` (Symbiont ÷ SAELens, ÷ mlx_lm.lora,
÷ the fastest peer at captured generation, ÷ TransformerLens at the captured forward;
ratios of medians; n/a where the peer side could not run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import peers_data  # noqa: E402
import peers_symbiont as sym  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402

PEER_LIBS = ("transformer_lens", "transformers", "nnsight")
PEER_PACKAGES = "torch transformers transformer_lens nnsight sae_lens"
PROMPT = "Write a long story about an owl who learns to count, with many characters."
SAE_POINT_LAYER = 15
HOW_TO_GET_PEERS = (
    "no peer interpreter: give one with --peers-python PATH (or $SYMBIONT_PEERS_PYTHON), a Python with\n"
    "  torch, transformers, transformer-lens, nnsight and sae-lens, e.g. (Linux x86_64, CPU torch needs 3.11 here):\n"
    "    python3.11 -m venv ~/peers-venv && ~/peers-venv/bin/pip install torch transformers transformer-lens "
    "nnsight sae-lens\n"
    "  (on Linux, a CPU-only torch: pip install torch --index-url https://download.pytorch.org/whl/cpu)\n"
    "  (or `pip install '.[peers]'` into a Python that has a torch wheel). Symbiont's own figures follow.")


def find_peers_python(given: str | None) -> tuple[str | None, str]:
    """The peer interpreter and why it was chosen (or why there is none)."""
    candidate = given or os.environ.get("SYMBIONT_PEERS_PYTHON")
    if not candidate and importlib.util.find_spec("torch") is not None:
        candidate = sys.executable
    if not candidate:
        return None, "none given and this interpreter has no torch"
    try:
        probe = subprocess.run([candidate, "-c", f"import {', '.join(PEER_PACKAGES.split())}"], capture_output=True,
                               text=True, env=peer_env())
    except OSError as exc:
        return None, f"{candidate}: cannot run it ({exc})"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["it did not start"])[-1]
        return None, f"{candidate} cannot import the peers ({last})"
    return candidate, candidate


def peer_env() -> dict[str, str]:
    """The peers' environment: offline, and without the BLAS that MLX's launcher preloads."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("SYMBIONT_BLAS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


class PeerProcess:
    """benchmarks/peers_torch.py, answering one JSON command per line."""

    def __init__(self, python: str, model_dir: Path, ids_file: Path, acts_file: Path, threads: int, log: Path):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [python, str(HERE / "peers_torch.py"), "--model", str(model_dir), "--ids", str(ids_file),
             "--acts", str(acts_file), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=peer_env())
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer process ended (exit {self.proc.wait()}); see {self.log.name}")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        self.log.close()


def sae_activations(loaded, rows: int) -> np.ndarray:
    """resid_post.15 over Python's documentation, ``[rows, d]`` float16 (each window's first,
    attention-sink position dropped, as the SAE pipeline does)."""
    from mlx_hooks.sae.activations import activations_at, token_windows
    from mlx_hooks.sae.corpus import python_docs_texts

    windows = token_windows(loaded.tokenizer, python_docs_texts(), 512)[: -(-rows // 511)]  # [W, 512]
    parts = []
    for i in range(0, len(windows), 4):
        x = activations_at(loaded.model, mx.array(windows[i : i + 4]), f"resid_post.{SAE_POINT_LAYER}")
        parts.append(np.array(x[:, 1:].astype(mx.float16)).reshape(-1, x.shape[-1]))  # [4 * 511, d]
    return np.concatenate(parts)[:rows]


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, float, float, str]] = []

    def add(self, workload: str, library: str, values: list[float], unit: str) -> tuple[float, float]:
        best, median = peers_data.summary(values)
        self.rows.append((workload, library, best, median, unit))
        return best, median

    def print(self) -> None:
        print(f"\n{'workload':10s}{'library':18s}{'best':>10s}{'median':>10s}  unit")
        for workload, library, best, median, unit in self.rows:
            print(f"{workload:10s}{library:18s}{best:10.2f}{median:10.2f}  {unit}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", help="a Python with torch, transformers, transformer-lens, nnsight, sae-lens")
    parser.add_argument("--quick", action="store_true", help="one short round of each workload")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (MLX uses the cores)")
    parser.add_argument("--work-dir", help="keep the HF folder, ids and activations here (default: a temp folder)")
    parser.add_argument("--rounds", type=int, help="rounds of every workload (default 3 forward, 2 others; quick 1)")
    parser.add_argument("--tokens", type=int, help="generated tokens per round (default 128; quick 32)")
    parser.add_argument("--sae-steps", type=int, help="SAE training steps per round (default 20; quick 8)")
    parser.add_argument("--lora-steps", type=int, help="LoRA steps per round (default 12; quick 6)")
    args = parser.parse_args()
    q = args.quick
    rounds = dict(forward=1 if q else 3, generate=1 if q else 2, sae=1 if q else 2, lora=1 if q else 2)
    if args.rounds:
        rounds = dict.fromkeys(rounds, args.rounds)
    gen_tokens, sae_steps, lora_steps = (32, 8, 6) if q else (128, 20, 12)
    gen_tokens, sae_steps, lora_steps = args.tokens or gen_tokens, args.sae_steps or sae_steps, args.lora_steps or lora_steps
    sae_warmup, lora_warmup = (2, 2) if q else (3, 2)

    started = time.perf_counter()
    print(f"backend: {backend_info()}", flush=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="symbiont-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    peers_python, why = find_peers_python(args.peers_python)
    print(f"peer interpreter: {why}", flush=True)
    if peers_python is None:
        print(HOW_TO_GET_PEERS, flush=True)

    loaded = load_model("default", runtime_dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    n_layers = loaded.fingerprint.n_layers
    model_dir = peers_data.write_hf_folder(peers_data.model_weights(model), loaded.config, loaded.folder,
                                           work / "SmolLM2-135M-Instruct-f32")
    ids = peers_data.token_ids(tokenizer, 512)
    (work / "ids.json").write_text(json.dumps(ids))
    forward_points = sym.forward_points(n_layers)
    logits, _ = sym.captured_forward(model, ids, forward_points)
    np.save(work / "logits.npy", np.array(logits[0]))  # [512, V]
    acts = sae_activations(loaded, 8192)  # batches are drawn at random from these rows, as both trainers do
    np.save(work / "acts.npy", acts)
    data_dir = peers_data.write_lora_dataset(work / "lora_data")
    prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    gen_points = [f"resid_post.{i}" for i in range(n_layers)]
    print(f"model: {loaded.name}, float32, {n_layers} layers; HF copy at {model_dir}", flush=True)

    peer = None
    if peers_python is not None:
        peer = PeerProcess(peers_python, model_dir, work / "ids.json", work / "acts.npy", args.threads,
                           work / "peers_torch.log")
        check = peer.ask(op="check", ref=str(work / "logits.npy"))
        if "error" in check:
            print(f"peer check failed: {check['error']}; see {work / 'peers_torch.log'}")
            peer.close()
            peer = None
        else:
            print(f"peers: {check['versions']}, torch threads {check['threads']}")
            for lib, diff in check["max_abs_diff"].items():
                print(f"  logits max |peer - Symbiont| on the 512 ids, {lib}: {diff:.2e}")

    table = Table()
    results: dict[str, dict[str, list[float]]] = {w: {} for w in rounds}

    def record(workload: str, library: str, value: float) -> None:
        results[workload].setdefault(library, []).append(value)

    def peer_round(workload: str, label: str, **command) -> dict | None:
        if peer is None:
            return None
        reply = peer.ask(op=workload, **command)
        if "error" in reply:
            print(f"  {workload} {label}: {reply['error']}", flush=True)
            return None
        record(workload, label, reply["tps"])
        return reply

    print(f"\nrounds (Symbiont and peers alternating; setup took {time.perf_counter() - started:.0f} s):", flush=True)
    for i in range(rounds["forward"]):
        record("forward", "symbiont", sym.forward_tps(model, ids, forward_points, warm_up=i == 0))
        for lib in PEER_LIBS:
            peer_round("forward", lib, lib=lib)

    sym.generate_tokens(model, tokenizer, prompt, 8, gen_points)  # warm-up
    for lib in PEER_LIBS:
        if peer is not None:
            peer.ask(op="generate", lib=lib, prompt=prompt, max_tokens=4)
    reference: list[int] | None = None
    for _ in range(rounds["generate"]):
        tokens, tps = sym.generate_tokens(model, tokenizer, prompt, gen_tokens, gen_points)
        record("generate", "symbiont", tps)
        reference = reference or tokens
        for lib in PEER_LIBS:
            reply = peer_round("generate", lib, lib=lib, prompt=prompt, max_tokens=len(reference))
            if reply is not None:
                same = next((i for i, (a, b) in enumerate(zip(reply["tokens"], reference)) if a != b),
                            min(len(reply["tokens"]), len(reference)))
                print(f"  generate {lib}: {len(reply['tokens'])} tokens, {reply['rows']} captured rows per point, "
                      f"first {same} identical to Symbiont's {len(reference)}", flush=True)

    for _ in range(rounds["sae"]):
        record("sae", "symbiont", sym.sae_tokens_per_second(acts, sae_steps, sae_warmup))
        peer_round("sae", "sae_lens", steps=sae_steps, warmup=sae_warmup)

    for _ in range(rounds["lora"]):
        record("lora", "symbiont", sym.symbiont_lora_steps_per_second(model_dir, data_dir, lora_steps, lora_warmup))
        record("lora", "mlx_lm.lora", sym.mlx_lm_lora_steps_per_second(model_dir, data_dir, lora_steps, lora_warmup))
    if peer is not None:
        peer.close()

    units = dict(forward="tok/s", generate="tok/s", sae="tok/s", lora="steps/s")
    medians: dict[str, dict[str, float]] = {}
    for workload, by_lib in results.items():
        for lib, values in by_lib.items():
            medians.setdefault(workload, {})[lib] = table.add(workload, lib, values, units[workload])[1]
    table.print()

    def ratio(workload: str, peer_lib: str | None) -> float | None:
        got = medians.get(workload, {})
        if peer_lib is None or peer_lib not in got or "symbiont" not in got:
            return None
        return got["symbiont"] / got[peer_lib]

    fastest_gen = max((lib for lib in PEER_LIBS if lib in medians.get("generate", {})),
                      key=lambda lib: medians["generate"][lib], default=None)
    print(f"\nsettings: forward {rounds['forward']} rounds; generate {rounds['generate']} x {gen_tokens} tokens "
          f"(fastest peer: {fastest_gen}); sae {rounds['sae']} x {sae_steps} steps; lora {rounds['lora']} x "
          f"{lora_steps} steps; torch threads {args.threads}; {time.perf_counter() - started:.0f} s in all")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(peers_data.ratios_line(ratio("sae", "sae_lens"), ratio("lora", "mlx_lm.lora"), ratio("generate", fastest_gen),
                                 ratio("forward", "transformer_lens")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
