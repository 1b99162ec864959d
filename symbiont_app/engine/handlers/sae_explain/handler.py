"""A latent explained by the loaded model, and the explanation scored by detection.

The model reads the latent's top activating contexts (from the SAE's feature records, the
token marked ``[[like this]]``) and writes a short description (greedy). The description is
then scored on texts the model did not see: the built-in prompts where the latent reaches
half its maximum over them, and as many where it stays under a tenth of it (the density pass's values,
:func:`..sae_dashboard.handler.sparse_values`). For each, the model is asked whether the text
matches the description; ``logit(yes) − logit(no)`` at the answer's first token is its
margin. Reported: accuracy of the yes/no (balanced set: chance is 0.5) and the AUROC of
the margins (threshold-free). This follows the "detection" scoring of automated
interpretability (a judge decides where a feature fires from its explanation), with the
same model as explainer and judge: a small model makes a weak judge, so the scores say
as much about the model as about the latent.
"""

from __future__ import annotations

import numpy as np

from mlx_hooks.errors import SymbiontError

from ...panel_state import panel_state
from ...registry import HandlerContext, handles
from ...state import EngineState
from ..sae_dashboard.handler import _check_latent, sparse_values
from .messages import ExplainLatent, LatentExplained, ScoredText

EXPLAIN_PROMPT = (
    "Below are text snippets where one internal feature of a language model is active. In each, the token "
    "where it is most active is marked [[like this]].\n\n{snippets}\n\n"
    "In a few words, what does this feature respond to? Answer with a short phrase only."
)
JUDGE_PROMPT = (
    "A feature of a language model responds to: {explanation}\n\nText: {text}\n\n"
    "Does the feature respond to something in this text? Answer yes or no."
)


QUIET = 0.1
"""A text counts as one where the latent does not fire when its largest value there is below this
fraction of its maximum over the corpus (a dense latent is > 0 somewhere in almost every text)."""


def held_out_texts(kept, latent: int, n_each: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of corpus texts where ``latent`` reaches half its maximum (strongest first) and of
    as many texts where it stays under :data:`QUIET` of it (a seeded draw); balanced, at most ``n_each`` each."""
    mine = kept.ids == latent
    per_text = np.zeros(len(kept.corpus), dtype=np.float32)
    np.maximum.at(per_text, kept.texts[mine], kept.values[mine])
    top = float(per_text.max(initial=0.0))
    if top <= 0:
        raise SymbiontError(f"latent {latent} never fires on the built-in prompts: nothing to score an explanation on")
    strong = [int(i) for i in np.argsort(-per_text, kind="stable") if per_text[i] >= 0.5 * top][:n_each]
    silent = np.flatnonzero(per_text < QUIET * top)
    n = min(len(strong), len(silent))
    if n < 2:
        raise SymbiontError(f"latent {latent}: too few built-in prompts where it fires strongly ({len(strong)}) "
                            f"or hardly at all ({len(silent)}) to score an explanation")
    rng = np.random.default_rng(seed)
    return strong[:n], [int(i) for i in rng.choice(silent, size=n, replace=False)]


def auroc(margins: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random firing text gets a larger margin than a random silent one (ties: half)."""
    pos, neg = margins[labels], margins[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _answer_ids(tokenizer, word: str) -> list[int]:
    """First token of each casing/spacing of ``word`` (the answer may start with any of them)."""
    ids = set()
    for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
        encoded = tokenizer.encode(variant, add_special_tokens=False) if hasattr(tokenizer, "encode") else []
        if encoded:
            ids.add(int(encoded[0]))
    return sorted(ids)


def _chat_ids(tokenizer, text: str) -> list[int]:
    from mlx_hooks.steering import prompt_tokens

    return prompt_tokens(tokenizer, text, chat_template=bool(getattr(tokenizer, "chat_template", None)))


@handles(ExplainLatent)
def explain(state: EngineState, request: ExplainLatent, ctx: HandlerContext) -> None:
    import mlx.core as mx
    from mlx_lm.generate import generate

    latent = _check_latent(state, request.latent)
    records = panel_state(state).records
    if records is None or not records.records[latent].top_contexts:
        raise SymbiontError(f"latent {latent}: this SAE has no top contexts to explain it from (no feature records)")
    model, tokenizer = state.loaded.model, state.loaded.tokenizer
    snippets = []
    for number, c in enumerate(records.records[latent].top_contexts, 1):
        tokens = list(c.tokens)
        tokens[c.focus] = f"[[{tokens[c.focus]}]]"
        snippets.append(f"{number}. " + "".join(tokens).replace("\n", " "))
    ctx.progress(0, 1, "the model writes an explanation")
    prompt = _chat_ids(tokenizer, EXPLAIN_PROMPT.format(snippets="\n".join(snippets)))
    explanation = generate(model, tokenizer, prompt, max_tokens=max(4, int(request.max_tokens)), verbose=False)
    explanation = " ".join(explanation.strip().split()) or "(no explanation)"
    kept = sparse_values(state, ctx)
    firing, silent = held_out_texts(kept, latent, max(2, int(request.n_each)))
    yes, no = _answer_ids(tokenizer, "yes"), _answer_ids(tokenizer, "no")
    scored = []
    cases = [(i, True) for i in firing] + [(i, False) for i in silent]
    for done, (index, fires) in enumerate(cases):
        if ctx.is_cancelled():
            return
        ids = _chat_ids(tokenizer, JUDGE_PROMPT.format(explanation=explanation, text=kept.corpus[index]))
        logits = model(mx.array([ids]))[0, -1].astype(mx.float32)  # [V]: the answer's first token
        # the best spelling of each answer (a tokenizer may split " yes" and "Yes" differently)
        margin = mx.max(logits[mx.array(yes)]) - mx.max(logits[mx.array(no)])
        scored.append(ScoredText(text=kept.corpus[index], fires=fires, margin=float(margin.item())))
        ctx.progress(done + 1, len(cases), "the model judges held-out texts")
    margins = np.array([s.margin for s in scored])
    labels = np.array([s.fires for s in scored])
    accuracy = float(((margins > 0) == labels).mean())
    ctx.emit(LatentExplained(request_id=request.request_id, latent=latent, explanation=explanation,
                             model=str(getattr(state.loaded, "name", "the loaded model")), accuracy=accuracy,
                             auroc=auroc(margins, labels), scored=tuple(scored)))
