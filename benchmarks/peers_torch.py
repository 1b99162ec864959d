"""The peer libraries' side of benchmarks/peers.py, run by a PyTorch interpreter.

    python benchmarks/peers_torch.py --model DIR --ids IDS.json --acts ACTS.npy [--threads N]

A small server: it loads transformers, TransformerLens and nnsight on the Hugging Face
folder that peers.py wrote (the same float32 weights Symbiont runs), then answers one JSON
command per stdin line with one JSON line on stdout, so peers.py can alternate Symbiont
rounds and peer rounds while each side keeps its model loaded. Everything the libraries
print goes to stderr. Every peer call runs under ``torch.inference_mode()`` (their fastest
setting: no autograd graph), with torch's thread count set to MLX's.

Commands: ``{"op": "check", "ref": LOGITS.npy}``, ``{"op": "forward", "lib": L}``,
``{"op": "generate", "lib": L, "prompt": [...], "max_tokens": N}``,
``{"op": "sae", "steps": N, "warmup": W}``, ``{"op": "quit"}``; L is ``transformer_lens``,
``transformers`` or ``nnsight``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

PEERS = ("transformer_lens", "transformers", "nnsight")


class Peers:
    def __init__(self, model_dir: str, ids: list[int], acts_path: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir, self.ids, self.acts_path = model_dir, ids, acts_path
        self.hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.layers = self.hf.model.layers
        self.n_layers = len(self.layers)
        self._tl = self._nnsight = None
        self._warm: set[str] = set()

    # -- the libraries, loaded on first use ---------------------------------------------
    @property
    def tl(self):
        if self._tl is None:
            import transformer_lens.loading_from_pretrained as loading
            from transformer_lens import HookedTransformer

            # TransformerLens loads only the models on its list (SmolLM2 is not); a local
            # folder on the list is read with AutoConfig like any Hugging Face checkpoint.
            if self.model_dir not in loading.OFFICIAL_MODEL_NAMES:
                loading.OFFICIAL_MODEL_NAMES.append(self.model_dir)
            self._tl = HookedTransformer.from_pretrained_no_processing(
                self.model_dir, hf_model=self.hf, tokenizer=self.tokenizer, device="cpu", dtype=torch.float32)
            self._tl.eval()
        return self._tl

    @property
    def nnsight(self):
        if self._nnsight is None:
            from nnsight import LanguageModel

            self._nnsight = LanguageModel(self.hf, tokenizer=self.tokenizer)
        return self._nnsight

    # -- workload 1: one forward with resid_pre + resid_post of every layer captured ----------
    def forward(self, lib: str) -> tuple[np.ndarray, int]:
        """Logits ``[L, V]`` and the number of captured points."""
        x = torch.tensor([self.ids])
        with torch.inference_mode():
            if lib == "transformer_lens":
                names = [f"blocks.{i}.hook_resid_{k}" for i in range(self.n_layers) for k in ("pre", "post")]
                logits, cache = self.tl.run_with_cache(x, names_filter=names)
                n = len(cache.cache_dict)
            elif lib == "transformers":
                cache: dict[str, torch.Tensor] = {}
                handles = []
                for i, layer in enumerate(self.layers):
                    handles.append(layer.register_forward_pre_hook(
                        lambda m, args, kwargs, i=i: cache.__setitem__(f"pre{i}", _hidden(args, kwargs)),
                        with_kwargs=True))
                    handles.append(layer.register_forward_hook(
                        lambda m, args, out, i=i: cache.__setitem__(f"post{i}", _first(out))))
                try:
                    logits = self.hf(x).logits
                finally:
                    for h in handles:
                        h.remove()
                n = len(cache)
            elif lib == "nnsight":
                saved = []  # made outside the block: nnsight runs the block's body on its own
                with self.nnsight.trace(x):
                    for layer in self.nnsight.model.layers:
                        saved.append(layer.inputs[0][0].save())
                        saved.append(layer.output.save())
                    out = self.nnsight.output.save()
                logits, n = out.logits, len(saved)
            else:
                raise ValueError(f"unknown peer {lib!r}")
        return logits[0].float().numpy(), n

    def forward_tps(self, lib: str) -> float:
        if lib not in self._warm:
            self.forward(lib)  # one untimed warm-up per library (Symbiont's side does the same)
            self._warm.add(lib)
        start = time.perf_counter()
        _, n = self.forward(lib)
        elapsed = time.perf_counter() - start
        if n != 2 * self.n_layers:
            raise RuntimeError(f"{lib}: captured {n} points, not {2 * self.n_layers}")
        return len(self.ids) / elapsed

    # -- workload 2: greedy generation, resid_post of every layer captured per token ----------
    def generate(self, lib: str, prompt: list[int], max_tokens: int) -> tuple[list[int], float, int]:
        """(new tokens, tokens/s over the whole call, captured rows per point)."""
        x = torch.tensor([prompt])
        rows: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]  # per layer: [D] per forward
        start = time.perf_counter()
        with torch.inference_mode():
            if lib == "transformer_lens":
                hooks = [(f"blocks.{i}.hook_resid_post", lambda act, hook, i=i: rows[i].append(act[0, -1].clone()))
                         for i in range(self.n_layers)]
                with self.tl.hooks(fwd_hooks=hooks):
                    out = self.tl.generate(x, max_new_tokens=max_tokens, do_sample=False, stop_at_eos=False,
                                           use_past_kv_cache=True, verbose=False, return_type="tokens")
                new = out[0, len(prompt):]
            elif lib == "transformers":
                handles = [layer.register_forward_hook(
                    lambda m, args, out, i=i: rows[i].append(_first(out)[0, -1].clone()))
                    for i, layer in enumerate(self.layers)]
                try:
                    out = self.hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                           do_sample=False, eos_token_id=None, pad_token_id=0)
                finally:
                    for h in handles:
                        h.remove()
                new = out[0, len(prompt):]
            elif lib == "nnsight":
                with self.nnsight.generate(x, max_new_tokens=max_tokens, do_sample=False, eos_token_id=None,
                                           pad_token_id=0) as tracer:
                    saved = list().save()
                    # Nothing after an unbounded `tracer.all()` loop runs, so the chosen token is read
                    # inside it (the argmax of the step's last logits, as greedy decoding takes it).
                    for _ in tracer.all():
                        saved.append([layer.output[0, -1] for layer in self.nnsight.model.layers]
                                     + [self.nnsight.lm_head.output[0, -1].argmax()])
                for step in saved:
                    for i, row in enumerate(step[:-1]):
                        rows[i].append(row)
                new = [step[-1] for step in saved]
            else:
                raise ValueError(f"unknown peer {lib!r}")
        elapsed = time.perf_counter() - start
        return [int(t) for t in new], len(new) / elapsed, min(len(r) for r in rows)

    # -- workload 3: SAELens TopK training on the stored activations --------------------------
    def sae_tps(self, steps: int, warmup: int, batch_size: int = 512, d_sae: int = 4608, k: int = 32) -> float:
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.config import SAETrainerConfig
        from sae_lens.training.sae_trainer import SAETrainer

        acts = np.load(self.acts_path, mmap_mode="r")  # [N, d_in] float16
        rng = np.random.default_rng(0)
        norm_batches = 4
        stamps: list[float] = []

        def provider():
            while True:
                stamps.append(time.perf_counter())
                index = np.sort(rng.choice(len(acts), size=batch_size, replace=False))
                yield torch.from_numpy(np.asarray(acts[index], dtype=np.float32))

        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=d_sae, k=k, device="cpu",
                                                    normalize_activations="expected_average_only_in"))
        config = SAETrainerConfig(total_training_samples=steps * batch_size, train_batch_size_samples=batch_size,
                                  lr=4e-4, lr_end=4e-4, device="cpu",
                                  n_batches_for_norm_estimate=norm_batches)
        trainer = SAETrainer(config, sae, provider())
        trainer.fit()
        stamps = stamps[norm_batches:]  # the scaling-factor estimate draws these first
        # One stamp per step, taken when the step asks for its batch: the span from the warm-up's
        # end to the last request covers (len - 1 - warmup) whole steps.
        return (len(stamps) - 1 - warmup) * batch_size / (stamps[-1] - stamps[warmup])


def _first(out):
    """A decoder layer's hidden states (a tensor, or the first item of older versions' tuples)."""
    return out[0] if isinstance(out, tuple) else out


def _hidden(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "transformers", "transformer-lens", "nnsight", "sae-lens")
    return {n: md.version(n) for n in names}


def handle(peers: Peers, command: dict) -> dict:
    op = command["op"]
    if op == "check":
        ref = np.load(command["ref"])  # [L, V] Symbiont's logits on the same ids
        return {"versions": versions(), "threads": torch.get_num_threads(),
                "max_abs_diff": {lib: float(np.abs(peers.forward(lib)[0] - ref).max()) for lib in PEERS}}
    if op == "forward":
        return {"tps": peers.forward_tps(command["lib"])}
    if op == "generate":
        tokens, tps, rows = peers.generate(command["lib"], command["prompt"], command["max_tokens"])
        return {"tokens": tokens, "tps": tps, "rows": rows}
    if op == "sae":
        return {"tps": peers.sae_tps(command["steps"], command["warmup"])}
    raise ValueError(f"unknown command {op!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face llama folder written by peers.py")
    parser.add_argument("--ids", required=True, help="JSON list of the forward workload's token ids")
    parser.add_argument("--acts", required=True, help="float16 [N, d] .npy of stored activations")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # the libraries' prints and progress bars stay off the reply channel
    with open(args.ids) as f:
        peers = Peers(args.model, [int(t) for t in json.load(f)], args.acts)
    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            result = handle(peers, command)
        except Exception as exc:  # reported to peers.py, which prints it beside the figures
            result = {"error": f"{type(exc).__name__}: {exc}"}
        reply.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
