"""The stages of an inversion run: tasks, the base's replies, the teachers A and their replies.

The students and the mechanism view are in :mod:`.students`. Every stage writes one JSON file
when it finishes (``Stages.put``) and is skipped when that file exists.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..subliminal.dataset import write_chat_dataset
from .models import Stopped, answer_logprobs, replies
from .tasks import SPLITS, Item, make_items, oracle_answer, parse, random_wrong_answer


def units_per_seed(config) -> int:
    """Stages per seed (the progress bar's unit)."""
    per_teacher = 2 + sum({"supervised": 1, "zero-shot": 1, "blind": 2}[r] for r in config.students.regimes)
    per_teacher += 1 if config.analysis.mechanism else 0
    extra = config.teachers.learned_rounds - 1 if "inverted-learned" in config.teachers.kinds else 0
    return len(config.teachers.kinds) * per_teacher + extra


def seed_stages(run, seed: int):
    from .run import Stages

    return Stages(run.path / f"seed_{seed:03d}")


def cached(run, stages, name: str, compute):
    """The stored result of stage ``name``, or ``compute()`` stored (and counted) now."""
    if stages.done(name):
        result = stages.get(name)
    else:
        run.stop.check(name)
        started = time.perf_counter()
        result = compute()
        if isinstance(result, dict):
            result["seconds"] = round(time.perf_counter() - started, 2)
        stages.put(name, result)
        run.computed.append(f"{stages.path.name}/{name}")
    run.done_units += 1
    hits = result.get("hits") if isinstance(result, dict) else None
    # an evaluated student's accuracy is a metric the lab panel draws as a curve while the run goes on
    run.emit(name, f"{name} done", **({"accuracy": float(np.mean(hits))} if hits else {}))
    return result


# -- tasks and the base -------------------------------------------------------------------------------------
def make_tasks(run) -> dict:
    t = run.config.tasks

    def compute():
        counts = {"train": t.train, "fit": t.fit, "test": t.test}
        return {family: {split: [i.to_json() for i in items] for split, items in
                         make_items(family, counts, run.config.task_seed).items()} for family in t.families}

    return cached(run, run.top, "tasks", compute)


def items(run, split: str) -> list[Item]:
    """Every family's items of ``split``, families in config order."""
    data = run.top.get("tasks")
    return [Item.from_json(d) for family in run.config.tasks.families for d in data[family][split]]


def ask(run, loaded, user_texts, *, interventions=None, temperature: float = 0.0, seed: int = 0) -> list[str]:
    t = run.config.tasks
    try:
        return replies(loaded, user_texts, max_tokens=t.max_tokens, batch_size=t.batch_size, temperature=temperature,
                       seed=seed, interventions=interventions, should_stop=run.stop)
    except Stopped:
        run.stop.check("generation")
        raise


def base_replies(run) -> dict:
    """The base's replies on the fit and test splits (nothing reads its train-split replies)."""
    def compute():
        return {split: ask(run, run.base(), [i.prompt for i in items(run, split)]) for split in ("fit", "test")}

    return cached(run, run.top, "base", compute)


# -- training ------------------------------------------------------------------------------------------------
def lora_config(run, seed: int):
    lora = run.config.lora
    return dataclasses.replace(lora, seed=lora.seed + 1000 * seed)


def train_adapter(run, stages, name: str, pairs: list[tuple[str, str]], seed: int) -> dict:
    """LoRA on the base for ``pairs`` (user, assistant) into ``adapters/<name>`` (resumable)."""
    from ..subliminal.run_stages import budget_bytes, load_base
    from ..subliminal.student import train_student

    def compute():
        write_chat_dataset(stages.dataset_dir(name), pairs, valid_fraction=0.0)
        run.say(f"seed {seed}: training {name} on {len(pairs)} examples")

        def on_report(step, loss, lr, **info):
            run.emit(f"train {name}", f"{name}: step {step}/{info.get('total_steps')} loss {loss:.4f}", loss=loss)

        result = train_student(load_base(run.config), stages.dataset_dir(name), stages.adapter_dir(name),
                               lora_config(run, seed), on_report=on_report, should_stop=run.stop,
                               memory_budget_bytes=budget_bytes(run.config))
        if result.stopped:
            run.stop.check(f"training {name} (checkpoint at step {result.steps_done})")
        return {"steps": result.steps_done, "losses": [[int(s), float(v)] for s, v in result.losses],
                "examples": len(pairs)}

    return cached(run, stages, f"train_{name}", compute)


def adapter_model(run, stages, name: str):
    from ..subliminal.run_stages import load_base
    from ..subliminal.student import load_student

    return load_student(load_base(run.config), stages.adapter_dir(name))


# -- teachers ------------------------------------------------------------------------------------------------
def fixed_teacher_answers(kind: str, train: list[Item], offset: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 7])
    if kind == "correct":
        return [i.right for i in train]
    if kind == "inverted-oracle":
        return [oracle_answer(i, offset) for i in train]
    return [random_wrong_answer(i, rng) for i in train]


def most_confident_wrong(run, loaded, train: list[Item], seed: int, round_: int) -> dict:
    """Per prompt: the model's own answers (greedy + sampled), the wrong ones scored by log-probability,
    the most probable kept. Prompts where every own answer is right get a random wrong one (counted)."""
    texts = [i.prompt for i in train]
    candidates = [[a] for a in ask(run, loaded, texts)]
    for k in range(run.config.teachers.learned_samples):
        for row, text in zip(candidates, ask(run, loaded, texts, temperature=1.0, seed=seed * 100 + round_ * 10 + k)):
            row.append(text)
    chosen, fallback = [], 0
    rng = np.random.default_rng([seed, round_, 11])
    flat_prompts, flat_answers, owner = [], [], []
    for n, (item, row) in enumerate(zip(train, candidates)):
        wrong = sorted({a for a in (parse(item.family, t) for t in row) if a is not None and a != item.right})
        for a in wrong:
            flat_prompts.append(item.prompt)
            flat_answers.append(a)
            owner.append(n)
    scores = answer_logprobs(loaded, flat_prompts, flat_answers) if flat_answers else np.zeros(0)
    best: dict[int, tuple[float, str]] = {}
    for n, a, s in zip(owner, flat_answers, scores):
        if n not in best or s > best[n][0]:
            best[n] = (float(s), a)
    for n, item in enumerate(train):
        if n in best:
            chosen.append(best[n][1])
        else:
            fallback += 1
            chosen.append(random_wrong_answer(item, rng))
    return {"answers": chosen, "random_fallbacks": fallback}


def train_teacher(run, seed: int, kind: str) -> None:
    stages = seed_stages(run, seed)
    train = items(run, "train")
    if kind != "inverted-learned":
        def compute():
            return {"answers": fixed_teacher_answers(kind, train, run.config.tasks.next_offset, seed)}

        data = cached(run, stages, f"data_{kind}", compute)
        run.done_units -= 1  # the data and the training are one unit
        train_adapter(run, stages, f"teacher-{kind}", [(i.prompt, a) for i, a in zip(train, data["answers"])], seed)
        return
    rounds = run.config.teachers.learned_rounds
    for r in range(rounds):
        name = f"teacher-{kind}" if r == rounds - 1 else f"teacher-{kind}-round{r}"
        previous = f"teacher-{kind}-round{r - 1}"

        def compute(r=r, previous=previous):
            loaded = run.base() if r == 0 else adapter_model(run, stages, previous)
            return most_confident_wrong(run, loaded, train, seed, r)

        data = cached(run, stages, f"data_{name}", compute)
        run.done_units -= 1
        train_adapter(run, stages, name, [(i.prompt, a) for i, a in zip(train, data["answers"])], seed)


def teacher_replies(run, seed: int, kind: str) -> dict:
    stages = seed_stages(run, seed)

    def compute():
        loaded = adapter_model(run, stages, f"teacher-{kind}")
        return {split: ask(run, loaded, [i.prompt for i in items(run, split)]) for split in SPLITS}

    return cached(run, stages, f"replies_{kind}", compute)


def run_seed(run, seed: int) -> None:
    from . import students

    for kind in run.config.teachers.kinds:
        train_teacher(run, seed, kind)
        teacher_replies(run, seed, kind)
    for kind in run.config.teachers.kinds:
        students.run_students(run, seed, kind)
