"""The meters, SAE, steering and lens panels below Qt: handlers on the real engine thread
(tiny random model and a tiny SAE) driven through the Qt-free session sub-models."""

from __future__ import annotations


import numpy as np
import pytest
from app_fakes import GREEDY, Pump

from symbiont_app.engine.handlers.lens.messages import LensComputed, PatchingComputed
from symbiont_app.engine.handlers.sae.messages import LatentRecord, SaeLoaded, SaeTrained, WatchedChanged
from symbiont_app.engine.handlers.steering.messages import InterventionsChanged
from symbiont_app.engine.handlers.chat.messages import TokenStep
from symbiont_app.engine.handlers.model.messages import LoadModel, ModelLoaded
from symbiont_app.engine.protocol import Failed, Finished, Progress
from symbiont_app.session.lens import LensModel
from symbiont_app.session.meters import MetersModel
from symbiont_app.session.sae import SaeModel
from symbiont_app.session.steering import SteeringModel

TEXTS = ["the cat sat on the mat. " * 4, "a dog ran in the park! " * 4, "one two three four five six " * 3,
         "hello world, hello there. " * 4, "numbers 1 2 3 4 5 6 7 8 9 " * 3]


@pytest.fixture(scope="module")
def tiny_sae_folder(tmp_path_factory, tiny_folder):
    """A TopK SAE on the tiny model's resid_post.1, saved with feature records (labels, contexts)."""
    import mlx.core as mx

    from mlx_hooks.loader import load_model
    from mlx_hooks.sae.features import build_feature_records
    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.model import SAE, SAEConfig

    loaded = load_model(str(tiny_folder))
    mx.random.seed(3)
    sae = SAE(SAEConfig(d_in=64, d_sae=48, architecture="topk", k=6, hook_point="resid_post.1", sae_id="tiny-topk"))
    mx.eval(sae.parameters())
    folder = tmp_path_factory.mktemp("tiny-sae") / "sae"
    save_sae(sae, folder)
    build_feature_records(sae, loaded.model, loaded.tokenizer, TEXTS, n_contexts=2, window=2, n_tokens=3,
                          max_seq_len=64, folder=folder)
    return folder


@pytest.fixture()
def pump(tmp_path, tiny_folder):
    p = Pump(tmp_path)
    rid = p.session.submit(LoadModel(request_id=p.session.new_id(), spec=str(tiny_folder)))
    assert isinstance(p.until(lambda e: isinstance(e, (ModelLoaded, Failed)) and e.request_id == rid), ModelLoaded)
    p.finish(rid)
    yield p
    p.stop()


def _load_sae(pump, folder) -> SaeModel:
    sae = SaeModel.of(pump.session)
    rid = sae.load(str(folder))
    assert isinstance(pump.finish(rid), Finished), sae.status
    assert sae.info is not None and sae.info.d_sae == 48
    return sae


def test_meters_show_latents_and_watched_values(pump, tiny_sae_folder):
    sae = _load_sae(pump, tiny_sae_folder)
    meters = MetersModel.of(pump.session)
    assert len(sae.info.labels) == 48 and any(sae.info.labels)  # labels from the feature records
    steps = pump.send("hello", max_tokens=4)
    assert steps and all("sae" in s.step.readings for s in steps)
    top = meters.current()
    assert 1 <= len(top) <= 8 and all(v > 0 for _, v, _ in top)
    assert [v for _, v, _ in top] == sorted((v for _, v, _ in top), reverse=True)
    # The focus follows the clicked token
    first = steps[0].step.position
    pump.session.conversation.selected_position = first
    assert [i for i, _, _ in meters.current()] == [lv.index for lv in steps[0].step.readings["sae"].top]

    latent = top[0][0]
    meters.watch(latent)
    pump.until(lambda e: isinstance(e, (WatchedChanged, Failed)))
    assert meters.watched == (latent,)
    more = pump.send("again", max_tokens=3)
    positions, values = meters.watched_history()
    assert values.shape == (1, len(steps) + len(more))
    # before it was watched, only the tokens where it was among the top latents have a value
    was_top = [any(lv.index == latent for lv in s.step.readings["sae"].top) for s in steps]
    assert list(~np.isnan(values[0, : len(steps)])) == was_top and was_top[-1]
    assert not np.isnan(values[0, len(steps):]).any()
    assert meters.frequent_latents(1)[0] in [lv.index for s in steps + more for lv in s.step.readings["sae"].top]

    meters.select(latent)
    record = pump.until(lambda e: isinstance(e, (LatentRecord, Failed)))
    assert isinstance(record, LatentRecord) and record.has_record and record.latent == latent
    assert record.contexts and record.promoted and sae.record is record


def test_contrast_search_finds_latents_more_active_on_a(pump, tiny_sae_folder):
    sae = _load_sae(pump, tiny_sae_folder)
    rid = sae.contrast(["the cat sat on the mat"], ["1 2 3 4 5 6 7 8"], top_n=5)
    assert isinstance(pump.finish(rid), Finished)
    found = sae.contrast_results
    assert 1 <= len(found) <= 5
    differences = [d for _, _, _, d, _ in found]
    assert differences == sorted(differences, reverse=True) and all(d > 0 for d in differences)
    assert all(abs(a - b - d) < 1e-6 for _, a, b, d, _ in found)


def test_clamp_changes_the_next_reply(pump, tiny_sae_folder):
    # The tiny random model's greedy path is too peaked for tokens to move: compare the logits
    # (the default-model test in test_app_panels_gui compares token ids).
    _load_sae(pump, tiny_sae_folder)
    meters = MetersModel.of(pump.session)
    before = pump.send("hello", max_tokens=3)
    latent = meters.current()[0][0]
    meters.clamp(latent, 20.0, "max_multiple")
    changed = pump.live_done()
    assert isinstance(changed, InterventionsChanged) and changed.items[0].latent == latent
    assert changed.items[0].kind == "clamp" and changed.items[0].mode == "max_multiple"
    pump.reset()
    after = pump.send("hello", max_tokens=3)
    assert np.abs(after[0].logprobs - before[0].logprobs).max() > 1e-2
    # the clamped latent reads at its clamped value (the meter's tap sees the clamped residual)
    maximum = float(SaeModel.of(pump.session).info.max_activations[latent])
    value = dict((i, v) for i, v, _ in meters.current()).get(latent)
    assert value == pytest.approx(20 * maximum, rel=0.05)
    # Switching the clamp off gives the unclamped reply back
    steering = SteeringModel.of(pump.session)
    steering.set_enabled(changed.items[0].name, False)
    assert pump.live_done().items[0].enabled is False
    pump.reset()
    np.testing.assert_allclose(pump.send("hello", max_tokens=3)[0].logprobs, before[0].logprobs, atol=1e-5)


def test_steering_slider_changes_next_token_logits(pump):
    steering = SteeringModel.of(pump.session)
    rid = steering.build("toy", positive=["I love this", "great day"], negative=["I hate this", "awful day"],
                         layer=1, coefficient=0.0)
    assert isinstance(pump.finish(rid), Finished), steering.status
    assert [i.name for i in steering.items] == ["toy"] and steering.items[0].hook_point == "resid_post.1"
    baseline = pump.send("hi", max_tokens=1)[0].logprobs
    steering.set_value("toy", 2.0)
    assert pump.live_done().items[0].value == 2.0
    pump.reset()
    steered = pump.send("hi", max_tokens=1)[0].logprobs
    assert np.abs(steered - baseline).max() > 1e-3
    steering.set_positions("toy", "generated")  # the prompt is left alone: the first token is unsteered
    assert pump.live_done().items[0].positions == "generated"
    pump.reset()
    np.testing.assert_allclose(pump.send("hi", max_tokens=1)[0].logprobs, baseline, atol=1e-5)


def test_slider_move_during_a_reply_acts_on_its_next_tokens(pump):
    steering = SteeringModel.of(pump.session)
    pump.finish(steering.build("toy", positive=["I love this"], negative=["I hate this"], layer=1, coefficient=0.0))
    reference = pump.send("go", max_tokens=60)
    pump.reset()
    rid = pump.session.conversation.send("go", GREEDY, 60, None)
    first = pump.until(lambda e: isinstance(e, TokenStep) and e.request_id == rid)
    steering.set_value("toy", 3.0)  # while the reply streams
    pump.finish(rid)
    steps = [first] + [e for e in pump.seen if isinstance(e, TokenStep) and e.request_id == rid][1:]
    moved = [not np.allclose(a.logprobs, b.logprobs, atol=1e-5) for a, b in zip(steps, reference)]
    assert not moved[0] and moved[-1]  # unchanged before the move, steered after it, in the same reply
    changed_at = moved.index(True)
    assert all(moved[changed_at:])


def test_preset_round_trip_and_refusal(pump, tiny_sae_folder, tmp_path):
    _load_sae(pump, tiny_sae_folder)
    steering, meters = SteeringModel.of(pump.session), MetersModel.of(pump.session)
    rid = steering.build("toy", positive=["yes yes"], negative=["no no"], layer=0, coefficient=0.3,
                         positions="generated")
    pump.finish(rid)
    meters.clamp(5, 1.5)
    pump.live_done()
    before = steering.items
    assert [i.kind for i in before] == ["vector", "clamp"]
    rid = steering.export_preset(tmp_path / "p.symbiont-preset", "round-trip")
    assert isinstance(pump.finish(rid), Finished), steering.status
    steering.remove("toy")
    pump.live_done()
    steering.remove(before[1].name)
    assert pump.live_done().items == ()
    rid = steering.import_preset(tmp_path / "p.symbiont-preset")
    assert isinstance(pump.finish(rid), Finished), steering.status
    assert steering.items == before
    assert "exact match" in steering.status

    # A preset made for another model is refused with the reason, and the active set stays as it was
    from mlx_hooks.presets import read_preset, write_preset

    preset = read_preset(tmp_path / "p.symbiont-preset")
    fingerprint = preset.fingerprint.to_dict()
    preset.fingerprint = type(preset.fingerprint).from_dict({**fingerprint, "n_layers": 7})
    write_preset(tmp_path / "other.symbiont-preset", preset)
    rid = steering.import_preset(tmp_path / "other.symbiont-preset")
    failed = pump.finish(rid)
    assert isinstance(failed, Failed) and "not the loaded model" in failed.message and "n_layers" in failed.message
    assert "failed" in steering.status and pump.session.last_error is failed
    steering.refresh()
    assert pump.live_done().items == before
    # Same architecture, other weights: refused unless allowed, then loaded with the warning shown
    preset.fingerprint = type(preset.fingerprint).from_dict({**fingerprint, "weights_hash": "0" * 64})
    write_preset(tmp_path / "finetune.symbiont-preset", preset)
    failed = pump.finish(steering.import_preset(tmp_path / "finetune.symbiont-preset"))
    assert isinstance(failed, Failed) and "allow different weights" in failed.message
    assert isinstance(pump.finish(steering.import_preset(tmp_path / "finetune.symbiont-preset", True)), Finished)
    assert "different weights" in steering.status and steering.items == before


def test_lens_over_conversation_and_patching(pump):
    lens = LensModel.of(pump.session)
    pump.send("hello there", max_tokens=4)
    computed = pump.until(lambda e: isinstance(e, (LensComputed, Failed)))  # auto-run after the reply
    assert isinstance(computed, LensComputed)
    n_tokens = int(computed.positions[-1]) + 1
    assert computed.points == ("resid_post.0", "resid_post.1", "resid_post.2")
    assert computed.top_probs.shape == (3, min(32, n_tokens), 5)
    assert np.all(np.diff(computed.top_probs, axis=-1) <= 1e-6)  # best first
    column = lens.column()
    assert [p for p, _ in column] == list(computed.points) and len(column[0][1]) == 5
    # The last layer's lens is the model's own output: its top token at the position that chose a
    # generated token is that (greedy) token
    chosen = pump.session.conversation.tokens[-1]
    index = lens.column_index(chosen.position - 1)
    assert computed.top_texts[-1][index][0] == chosen.text

    rid = lens.run_patching("ab cd", "ab ce", "x", "y")
    event = pump.until(lambda e: isinstance(e, (PatchingComputed, Failed)) and e.request_id == rid)
    assert isinstance(event, PatchingComputed), getattr(event, "message", "")
    assert event.scores.shape == (3, len(event.tokens))
    assert np.isfinite(event.scores).all() and event.answers == ("x", "y")
    rid = lens.run_patching("ab cd", "ab", "x", "y")
    failed = pump.finish(rid)
    assert isinstance(failed, Failed) and "same token length" in failed.message


def test_wrong_width_sae_is_refused_in_the_window(pump, tmp_path):
    import mlx.core as mx

    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.model import SAE, SAEConfig

    wide = SAE(SAEConfig(d_in=96, d_sae=16, architecture="topk", k=2, hook_point="resid_post.1", sae_id="wide"))
    mx.eval(wide.parameters())
    save_sae(wide, tmp_path / "wide")
    sae = SaeModel.of(pump.session)
    rid = sae.load(str(tmp_path / "wide"))
    failed = pump.finish(rid)
    assert isinstance(failed, Failed) and "96" in failed.message and "64" in failed.message
    assert "could not load the SAE" in sae.status and sae.info is None
    rid = sae.load("no-such-sae-id")
    assert "no SAE with that id" in pump.finish(rid).message


def test_train_sae_cancel_and_resume(pump, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(TEXTS * 3):
        (corpus / f"{i}.txt").write_text(text)
    sae = SaeModel.of(pump.session)
    settings = dict(out=str(tmp_path / "trained"), hook_point="resid_post.1", corpus=str(corpus), d_sae=32, k=4,
                    steps=300, batch_size=16, context_length=16, report_every=2, build_records=True)
    rid = sae.train(**settings)
    pump.until(lambda e: isinstance(e, Progress) and e.request_id == rid and e.metrics.get("stage") == "training")
    sae.cancel_training()
    end = pump.finish(rid)
    assert isinstance(end, Finished) and end.reason == "cancelled"
    assert not any(isinstance(e, SaeTrained) for e in pump.seen)  # a cancelled request emits no result
    assert "resume" in sae.status and not sae.training
    rid = sae.train(**settings)  # the same run folder: resumes from the checkpoint
    assert isinstance(pump.finish(rid, timeout=300), Finished), sae.status
    assert sae.train_result is not None and sae.train_result.finished
    steps = sae.train_metrics["step"]
    assert steps and steps[-1] == 300 and steps[0] > 2  # resumed: the early steps are not reported again
    assert 0 < sae.train_metrics["l0"][-1] <= 4
    assert sae.info is not None and sae.info.d_sae == 32 and sae.info.path == settings["out"]
    assert isinstance([e for e in pump.seen if isinstance(e, SaeLoaded)][-1], SaeLoaded)
