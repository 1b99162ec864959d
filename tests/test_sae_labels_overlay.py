"""The user's labels of an SAE whose folder must not be written (a shipped SAE, inside the app):
kept under <user data>/sae_labels/<id>-<digest>/labels.json, never beside the weights, and merged
back when the SAE is loaded again. Real engine thread on the tiny model."""

from __future__ import annotations

import json

from app_fakes import Pump

from symbiont_app.engine.handlers.sae_dashboard.messages import LatentLabelChanged, SetLatentLabel
from symbiont_app.engine.handlers.sae.messages import SaeLoaded
from symbiont_app.engine.protocol import Failed, Finished


def test_labels_of_a_shipped_sae_go_to_the_user_data_folder(tiny_folder, tmp_path, monkeypatch):
    from test_app_dashboard import _sae_with_records

    from mlx_hooks.sae.saving import weights_digest
    from symbiont_app import bundle

    shipped = tmp_path / "shipped"
    folder, records = _sae_with_records(shipped)  # before the engine thread starts
    monkeypatch.setattr(bundle, "shipped_sae_root", lambda: shipped)  # this folder plays the app's own SAEs
    monkeypatch.setenv("SYMBIONT_DATA_DIR", str(tmp_path / "data"))
    pump = Pump(tmp_path)
    try:
        from symbiont_app.session.sae import SaeModel

        assert isinstance(pump.finish(pump.session.models.load(str(tiny_folder))), Finished)
        sae = SaeModel.of(pump.session)
        assert isinstance(pump.finish(sae.load(str(folder))), Finished)
        rid = pump.session.submit(SetLatentLabel(request_id=pump.session.new_id(), latent=3, text="  my three "))
        changed = pump.until(lambda e: isinstance(e, (LatentLabelChanged, Failed)) and e.request_id == rid)
        assert isinstance(changed, LatentLabelChanged), changed
        from mlx_hooks.sae.formats import load_sae
        from conftest import make_tiny_llama

        digest = weights_digest(load_sae(folder, make_tiny_llama(), attach_records=False))[:16]
        overlay = tmp_path / "data" / "sae_labels" / f"tiny-dash-{digest}" / "labels.json"
        assert changed.path == str(overlay) and changed.label == "my three" and changed.source == "user"
        assert json.loads(overlay.read_text())["labels"] == {"3": "my three"}
        assert not (folder / "labels.json").exists()  # the shipped folder is left alone
        rid = sae.load(str(folder))
        loaded = pump.until(lambda e: isinstance(e, (SaeLoaded, Failed)) and e.request_id == rid)
        assert isinstance(loaded, SaeLoaded) and loaded.labels[3] == "my three"
        assert loaded.labels[4] == records.records[4].auto_label  # the others keep their automatic labels
        pump.finish(rid)
    finally:
        pump.stop()
