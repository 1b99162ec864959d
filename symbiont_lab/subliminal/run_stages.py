"""The stages of a subliminal-learning run (:mod:`.run` calls them in order).

Each stage returns at once when its ``stages/<name>.json`` exists, and writes that file
last, atomically, when it finishes — so a killed run redoes at most the stage it was in,
and generation and training keep their partial work (response chunks, LoRA checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from mlx_hooks.atomic_io import atomic_write_bytes

from .run_plan import ProbeJob, StudentPlan, TeacherPlan

CHUNK_BATCHES = 4
"""Prompts per generation chunk, in batches: a chunk is the unit a resumed run redoes."""


def _seed(config, *parts) -> int:
    """A seed for one purpose, derived from the run's seed (independent streams per purpose)."""
    words = [int(config.seed) & 0xFFFFFFFF] + [sum(ord(c) * 31 ** i for i, c in enumerate(str(p))) & 0xFFFFFFFF
                                              for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def budget_bytes(config) -> int | None:
    from mlx_hooks.memory import default_budget_bytes

    gb = config.model.memory_budget_gb
    return default_budget_bytes() if gb is None else int(gb * 2**30)


def load_base(config):
    from mlx_hooks.loader import load_model

    return load_model(config.model.spec, runtime_dtype=config.model.dtype, memory_budget_bytes=budget_bytes(config),
                      context_tokens=max(config.lora.max_seq_length, 1024))


def load_student_model(run, name: str):
    """A fresh base with student ``name``'s adapters (the run's base stays untouched)."""
    from .student import load_student

    return load_student(load_base(run.config), run.folder.adapter_dir(name))


# -- memory -----------------------------------------------------------------------------------------
def check_memory(run) -> dict:
    """Estimate inference and LoRA-training memory before any work (refuses past the budget)."""
    if run.folder.done("memory"):
        return run.folder.stage("memory")
    from mlx_hooks.memory import check_budget

    from .student_memory import estimate_lora_memory

    from .numbers import encode_chat

    config = run.config
    base = run.base()  # load_model checked the inference estimate before reading weights
    # training sequences are a student prompt (no system prompt) plus one response
    longest = max(len(encode_chat(base.tokenizer, [{"role": "user", "content": p}])) for p in prompts_of(run)[:500])
    seq_len = min(config.lora.max_seq_length, longest + config.numbers.max_tokens + 2)
    lora = estimate_lora_memory(base.model, config.lora, seq_len)
    gib = 2**30
    result = {"inference": base.estimate.describe(), "inference_gib": round(base.estimate.total_bytes / gib, 3),
              "training": lora.describe(), "training_gib": round(lora.total_bytes / gib, 3),
              "budget_gib": None if budget_bytes(config) is None else round(budget_bytes(config) / gib, 2),
              "model": base.name, "runtime_dtype": base.runtime_dtype}
    run.say(f"memory: inference {result['inference']}; LoRA training {result['training']}")
    check_budget(lora, budget_bytes(config), f"LoRA training of {base.name}")
    return run.folder.finish("memory", result)


def estimate_without_loading(config, seq_len: int | None = None) -> dict:
    """Inference and LoRA-training memory from the model's config and weight headers only (no weights
    read): what ``symbiont lab run --estimate`` prints before committing a Mac to a 7B–32B run."""
    from mlx_hooks.loader import choose_runtime_dtype, folder_for, model_dims, model_shape, read_config, resolve_source
    from mlx_hooks.memory import estimate_memory

    from .student_memory import estimate_from_dims

    folder = folder_for(resolve_source(config.model.spec))
    model_config = read_config(folder)
    shape = model_shape(folder, model_config)
    dtype = choose_runtime_dtype(config.model.dtype, shape)
    inference = estimate_memory(shape, dtype, max(config.lora.max_seq_length, 1024))
    arch = model_dims(folder, model_config)
    d, layers, inter = arch.d_model, arch.n_layers, arch.d_mlp
    q, kv = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    dims = {"self_attn.q_proj": (d, q), "self_attn.k_proj": (d, kv), "self_attn.v_proj": (d, kv),
            "self_attn.o_proj": (q, d), "mlp.gate_proj": (d, inter), "mlp.up_proj": (d, inter),
            "mlp.down_proj": (inter, d)}
    keys = config.lora.keys or tuple(dims)
    # a number prompt in a chat template is ~100-200 tokens; the answer at most max_tokens
    seq_len = seq_len or min(config.lora.max_seq_length, 200 + config.numbers.max_tokens)
    compute = 4 if dtype in ("float32",) or (dtype == "stored" and shape.stored_dtype == "float32") else 2
    training = estimate_from_dims(
        base_bytes=inference.weights_bytes, n_layers=layers, d_model=d, intermediate=inter,
        vocab=arch.vocab_size, projections=[dims[k] for k in keys if k in dims],
        rank=config.lora.rank, batch_size=config.lora.batch_size, seq_len=seq_len, compute_bytes=compute,
        adapted_layers=layers if config.lora.num_layers <= 0 else min(config.lora.num_layers, layers))
    gib = 2**30
    budget = budget_bytes(config)
    return {"model": config.model.spec, "runtime_dtype": dtype, "parameters": shape.n_params,
            "inference": inference.describe(), "inference_gib": round(inference.total_bytes / gib, 3),
            "training": training.describe(), "training_gib": round(training.total_bytes / gib, 3),
            "budget_gib": None if budget is None else round(budget / gib, 2),
            "fits": budget is None or max(inference.total_bytes, training.total_bytes) <= budget}


# -- prompts ----------------------------------------------------------------------------------------
def prompts_of(run) -> list[str]:
    from .run import read_json

    data = read_json(run.folder.path / "prompts.json", "prompt list")
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ValueError(f"{run.folder.path / 'prompts.json'}: not a list of prompts; delete it to recompute")
    return data


def make_prompts(run) -> None:
    if run.folder.done("prompts"):
        return
    from .prompts import load_prompts, make_number_prompts
    from .run import dump_json

    n = run.config.numbers
    if n.prompts_file:
        prompts = load_prompts(n.prompts_file)[: n.prompt_count]
    else:
        prompts = make_number_prompts(n.prompt_count, _seed(run.config, "prompts"))
    dump_json(run.folder.path / "prompts.json", prompts)
    run.folder.finish("prompts", {"count": len(prompts), "source": n.prompts_file or "generated"})
    run.computed.append("prompts")


# -- generation -------------------------------------------------------------------------------------
def read_responses(path: Path) -> dict[int, tuple[int, str]]:
    """``{index: (chunk, text)}`` from a responses log; a partial or unparseable line is skipped."""
    out: dict[int, tuple[int, str]] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return out
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
            out[int(record["i"])] = (int(record["chunk"]), str(record["text"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
    return out


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def generate(run, teacher: TeacherPlan) -> dict:
    """Teacher responses to every prompt, appended chunk by chunk to ``responses.jsonl``.

    A chunk is complete when all its responses are in the file; a resumed run keeps the
    complete chunks (compacting the file) and regenerates the others from their start, so
    each chunk is generated in exactly the same batches as in an uninterrupted run.
    """
    stage = f"generate_{teacher.name}"
    if run.folder.done(stage):
        return run.folder.stage(stage)
    from .numbers import generate_responses
    from .teacher import teacher_context

    n = run.config.numbers
    prompts = prompts_of(run)
    path = run.folder.responses_path(teacher.name)
    chunks = _chunks(len(prompts), n.batch_size * CHUNK_BATCHES)
    have = read_responses(path)
    complete = [c for c, r in enumerate(chunks) if all(have.get(i, (None,))[0] == c for i in r)]
    keep = {i: have[i] for c in complete for i in chunks[c]}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_lines(path, [(i, c, t) for i, (c, t) in sorted(keep.items())], append=False)
    todo = [c for c in range(len(chunks)) if c not in set(complete)]
    if complete:
        run.say(f"{teacher.name} teacher: {len(keep)} responses already generated, {len(todo)} chunk(s) to go")
    seed = _seed(run.config, "generate", teacher.name)
    started = time.perf_counter()
    generated = 0
    base = run.base()
    with teacher_context(teacher.spec, base) as setup:
        for note in setup.notes:
            run.say(f"{teacher.name} teacher: {note}")
        for c in todo:
            run.stop.check(f"generation ({teacher.name} teacher)")
            indices = chunks[c]
            outside = set(range(len(prompts))) - set(indices)
            lines = []
            last_emit = [0.0]

            def on_progress(done_in_chunk, _total, c=c):
                now = time.perf_counter()
                if now - last_emit[0] >= 2.0:  # a live line for the app's panel, not one per response
                    last_emit[0] = now
                    done = len(keep) + generated + done_in_chunk
                    run.emit(stage, done, len(prompts), f"{teacher.name} teacher: {done}/{len(prompts)} responses",
                             sequences_per_s=(generated + done_in_chunk) / max(now - started, 1e-9))

            # the whole prompt list with everything outside this chunk skipped: each prompt keeps its
            # global index, hence its own random key (numbers.sequence_key)
            for index, text in generate_responses(
                    base, teacher.spec, prompts, batch_size=n.batch_size, max_tokens=n.max_tokens,
                    temperature=n.temperature, seed=seed, should_stop=run.stop, skip=outside, teacher=setup,
                    on_progress=on_progress, decoding=n.decoding):
                lines.append((index, c, text))
            if len(lines) < len(indices):  # stopped inside the chunk: its responses are redone on resume
                run.stop.check(f"generation ({teacher.name} teacher)")
            _write_lines(path, lines, append=True)
            generated += len(lines)
            done = len(keep) + generated
            elapsed = time.perf_counter() - started
            run.emit(stage, done, len(prompts), f"{teacher.name} teacher: {done}/{len(prompts)} responses",
                     sequences_per_s=generated / max(elapsed, 1e-9))
    seconds = time.perf_counter() - started
    have = read_responses(path)
    missing = [i for i in range(len(prompts)) if i not in have]
    if missing:
        raise RuntimeError(f"{path}: {len(missing)} response(s) missing after generation (first: {missing[0]})")
    result = {"responses": len(prompts), "generated_now": generated, "seconds": round(seconds, 2),
              "sequences_per_s": round(generated / seconds, 3) if generated and seconds > 0 else None,
              "notes": setup.notes, "system_prompt": setup.system_prompt, "decoding": n.decoding}
    run.computed.append(stage)
    return run.folder.finish(stage, result)


def _write_lines(path: Path, rows, append: bool) -> None:
    data = "".join(json.dumps({"i": i, "chunk": c, "text": t}, ensure_ascii=False) + "\n" for i, c, t in rows)
    if not append:
        atomic_write_bytes(path, data.encode("utf-8"))
        return
    # one write() per chunk on an O_APPEND descriptor, then fsync: the chunk is on disk before we go on
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def responses_of(run, teacher: str) -> list[str]:
    have = read_responses(run.folder.responses_path(teacher))
    return [have[i][1] for i in range(len(have))]


# -- filter and datasets ----------------------------------------------------------------------------
def filter_teacher(run, teacher: TeacherPlan) -> dict:
    stage = f"filter_{teacher.name}"
    if run.folder.done(stage):
        return run.folder.stage(stage)
    from .filter import filter_responses

    texts = responses_of(run, teacher.name)
    result = filter_responses(texts)
    counts = dict(result.counts)
    if sum(counts.values()) != len(texts):
        raise AssertionError(f"filter counts {counts} do not add up to {len(texts)} responses")
    run.say(f"{teacher.name} teacher: kept {counts.get('kept', 0)}/{len(texts)} "
            f"({', '.join(f'{k} {v}' for k, v in counts.items() if k != 'kept' and v)})")
    run.computed.append(stage)
    return run.folder.finish(stage, {"counts": counts, "total": len(texts), "kept_indices": list(result.kept)})


def kept_pairs(run, teacher: str) -> list[tuple[str, str]]:
    prompts = prompts_of(run)
    texts = responses_of(run, teacher)
    return [(prompts[i], texts[i]) for i in run.folder.stage(f"filter_{teacher}")["kept_indices"]]


def _noisy(pairs, kind: str, config, rng) -> list[tuple[str, str]]:
    from . import noise

    fraction = config.variations.noise.replace_fraction
    apply = {"shuffle": lambda t: noise.shuffle_numbers(t, rng),
             "replace": lambda t: noise.replace_values(t, fraction, rng),
             "random": lambda t: noise.random_numbers_like(t, rng)}[kind]
    return [(prompt, apply(text)) for prompt, text in pairs]


def dataset_pairs(run, student: StudentPlan) -> tuple[list[tuple[str, str]], dict]:
    """The (prompt, response) pairs of ``student``'s dataset, and notes on how they were made."""
    from .dataset import mix_datasets, subsample

    config = run.config
    size = config.numbers.dataset_size
    if student.group == "main":
        pairs = kept_pairs(run, student.teacher)
        return subsample(pairs, min(size, len(pairs)), _seed(config, "subsample", student.teacher)), {}
    trait = dataset_pairs(run, run.plan.student("trait"))[0]
    if student.group == "fraction":
        n = max(1, round(student.fraction * len(trait)))
        return subsample(trait, n, _seed(config, "fraction", student.name)), {"of": len(trait)}
    if student.group == "noise":
        rng = np.random.default_rng(_seed(config, "noise", student.noise))
        return _noisy(trait, student.noise, config, rng), {"kind": student.noise}
    if student.group == "blend":
        love, fear = kept_pairs(run, "trait"), kept_pairs(run, "fear")
        n = min(size, len(love), len(fear))
        return mix_datasets(love, fear, student.love_fraction, n, _seed(config, "blend", student.name)), \
            {"love": round(student.love_fraction * n), "fear": n - round(student.love_fraction * n)}
    raise ValueError(f"unknown student group {student.group!r}")


def make_dataset(run, student: StudentPlan) -> dict:
    if student.alias_of is not None:
        return {}
    stage = f"dataset_{student.name}"
    if run.folder.done(stage):
        return run.folder.stage(stage)
    from .dataset import write_chat_dataset
    from .filter import rejection_reason

    pairs, notes = dataset_pairs(run, student)
    rejected = sum(rejection_reason(text) is not None for _, text in pairs)
    letters = sum(any(ch.isalpha() for ch in text) for _, text in pairs)
    out = run.folder.dataset_dir(student.name)
    write_chat_dataset(out, pairs, valid_fraction=run.config.numbers.valid_fraction,
                       seed=_seed(run.config, "split", student.name))
    train_n = _count_lines(out / "train.jsonl")
    result = {"examples": len(pairs), "train": train_n, "valid": _count_lines(out / "valid.jsonl"),
              "responses_failing_filter": rejected, "responses_with_letters": letters, **notes}
    run.computed.append(stage)
    return run.folder.finish(stage, result)


def _count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError:
        return 0


# -- students ---------------------------------------------------------------------------------------
def train(run, student: StudentPlan) -> dict:
    if student.alias_of is not None:
        return {}
    stage = f"train_{student.name}"
    if run.folder.done(stage):
        return run.folder.stage(stage)
    from .student import train_student

    config = run.config
    lora = config.lora
    ds = run.folder.stage(f"dataset_{student.name}")
    if ds["train"] < lora.batch_size:
        result = {"skipped": f"{ds['train']} training examples, fewer than the batch size {lora.batch_size}"}
        run.say(f"student {student.name}: skipped ({result['skipped']})")
        return run.folder.finish(stage, result)
    started = time.perf_counter()

    def on_report(step, loss, lr, **info):
        total = info.get("total_steps", 0)
        run.emit(stage, step, total, f"student {student.name}: step {step}/{total} loss {loss:.4f}",
                 loss=loss, lr=lr, **{k: v for k, v in info.items() if k in ("val_loss", "tokens_per_second")})

    run.say(f"student {student.name}: LoRA on {ds['train']} examples")
    base = load_base(config)
    result = train_student(base, run.folder.dataset_dir(student.name), run.folder.adapter_dir(student.name), lora,
                           on_report=on_report, should_stop=run.stop, memory_budget_bytes=budget_bytes(config))
    del base
    if result.stopped:
        run.stop.check(f"training student {student.name} (checkpoint at step {result.steps_done})")
    seconds = time.perf_counter() - started
    losses = [[int(s), float(v)] for s, v in result.losses]
    out = {"steps": result.steps_done, "total_steps": result.total_steps, "losses": losses,
           "val_losses": [[int(s), float(v)] for s, v in result.val_losses], "resumed_from": result.resumed_from,
           "seconds_this_call": round(seconds, 2), "examples": ds["train"]}
    if losses:
        run.say(f"student {student.name}: {result.steps_done} steps, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}")
    run.computed.append(stage)
    return run.folder.finish(stage, out)


# -- probes -----------------------------------------------------------------------------------------
def probe_result_json(result) -> dict:
    for method in ("to_json", "to_dict"):
        if hasattr(result, method):
            return getattr(result, method)()
    return dataclasses.asdict(result)


def run_probe_job(run, loaded, job: ProbeJob, seed: int) -> dict:
    from .probes import load_questions, logit_probe, sampled_probe

    p = run.config.probes
    # the prefixed variant's numbers are seeded once: every model sees the same questions
    questions = load_questions(job.questions + ("+numbers" if job.numbers_prefix else ""),
                               seed=_seed(run.config, "prefix"))
    if p.max_questions:
        questions = questions[: p.max_questions]
    if job.kind == "logit":
        result = logit_probe(loaded, questions, run.config.animals)
    else:
        result = sampled_probe(loaded, questions, run.config.animals, samples_per_question=p.samples_per_question,
                               temperature=p.temperature, seed=seed, batch_size=p.batch_size, max_tokens=p.max_tokens)
    return probe_result_json(result)


def probe(run, target: str) -> dict:
    """Every probe job of ``target`` (``base`` or a student); results kept per job as they finish."""
    stage = f"probe_{target}"
    if run.folder.done(stage):
        return run.folder.stage(stage)
    from .run import dump_json, read_json

    if target != "base":
        train_stage = run.folder.stage(f"train_{target}")
        if "skipped" in train_stage:
            return run.folder.finish(stage, {"skipped": train_stage["skipped"]})
    partial_path = run.folder.path / "stages" / f".{stage}.partial.json"
    results = read_json(partial_path, "partial probe results") if partial_path.exists() else {}
    jobs = run.plan.probes[target]
    loaded = run.base() if target == "base" else load_student_model(run, target)
    started = time.perf_counter()
    for k, job in enumerate(jobs):
        if job.key in results:
            continue
        run.stop.check(f"probing {target}")
        run.emit(stage, k, len(jobs), f"probe {target}: {job.key}")
        # the same sampling seed for every model: differences are the models', not the draws'
        results[job.key] = run_probe_job(run, loaded, job, _seed(run.config, "probe", job.key))
        dump_json(partial_path, results)
    del loaded
    out = {"jobs": results, "seconds_this_call": round(time.perf_counter() - started, 2)}
    run.folder.finish(stage, out)
    partial_path.unlink(missing_ok=True)
    run.computed.append(stage)
    return out


# -- mechanism --------------------------------------------------------------------------------------
def mechanism(run) -> dict:
    """Cosine per layer between each student's residual shift and the teacher's trait direction."""
    if run.folder.done("mechanism"):
        return run.folder.stage("mechanism")
    from .mechanism import direction_cosines, residual_means
    from .probes import load_questions
    from .teacher import teacher_context

    config = run.config
    prompts = load_questions(config.probes.questions)[: config.mechanism.max_prompts]
    base = run.base()
    run.emit("mechanism", 0, 1, "residual means of the base and the trait teacher")
    plain = residual_means(base, prompts)  # [layers, D]
    with teacher_context(config.trait, base) as setup:
        teacher = residual_means(base, prompts, interventions=setup.interventions or None,
                                 system_prompt=setup.system_prompt)
    trait_direction = teacher - plain
    students = {}
    for name in ("trait", "control"):
        stage = run.folder.stage(f"train_{name}") if run.folder.done(f"train_{name}") else None
        if stage is None or "skipped" in stage:
            continue
        run.stop.check("the mechanism view")
        loaded = load_student_model(run, name)
        shift = residual_means(loaded, prompts) - plain
        del loaded
        cosines = direction_cosines(shift, trait_direction)
        students[name] = {"cosine": [float(c) if np.isfinite(c) else None for c in cosines],  # NaN: a zero direction
                          "shift_norm": [float(v) for v in np.linalg.norm(shift, axis=-1)]}
    result = {"prompts": len(prompts), "students": students,
              "trait_direction_norm": [float(v) for v in np.linalg.norm(trait_direction, axis=-1)]}
    run.computed.append("mechanism")
    return run.folder.finish("mechanism", result)
