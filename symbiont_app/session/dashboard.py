"""The feature dashboard's Qt-free state: everything known about the selected latent.

Follows the meters' selected latent (:class:`~.meters.MetersModel`): the record (top
contexts, promoted/suppressed tokens) arrives through :class:`~.sae.SaeModel`; this model
asks the engine for the latent's activation density (the first ask per SAE reads the
built-in prompts, later ones are instant) and sends the user's label edits.
Whether the latent is clamped or ablated is read from the steering list.

Optionally the loaded model explains the latent from its top contexts, scored by detection
(:mod:`..engine.handlers.sae_explain.handler`).

Notifies ``latent`` (another latent, or its record arrived), ``density``, ``label``, ``explanation``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..engine.handlers.sae_dashboard.messages import GetLatentDensity, LatentDensity, LatentLabelChanged, SetLatentLabel
from ..engine.handlers.sae_explain.messages import ExplainLatent, LatentExplained
from ..engine.handlers.sae.messages import SaeLoaded, SaeUnloaded
from ..engine.handlers.model.messages import ModelLoaded
from ..engine.protocol import Failed, Finished
from .meters import MetersModel
from .observable import Observable
from .sae import SaeModel, attach
from .steering import SteeringModel

AUTO_LABEL_SOURCE = ("automatic label: the tokens it fires on most → the tokens its decoder direction promotes "
                     "most (from the SAE's feature records)")
USER_LABEL_SOURCE = "your label (saved in {path})"


def label_source(record, user_path: str = "") -> str:
    """Where the shown label of ``record`` (a ``LatentRecord``) comes from, in words."""
    if record is None:
        return ""
    # (records from before these fields, e.g. a test's stand-in, read as having none)
    if getattr(record, "user_label", ""):
        return USER_LABEL_SOURCE.format(path=user_path or "labels.json beside the SAE")
    if getattr(record, "auto_label", ""):
        return AUTO_LABEL_SOURCE
    if record.label:
        return "label shipped with the SAE"
    return "no label yet: write one below"


def clamped_latents(session) -> dict:
    """``latent -> InterventionInfo`` of the steering list's clamps on the loaded SAE (ablations are clamps to 0)."""
    steering = SteeringModel.of(session)
    info = SaeModel.of(session).info
    sae_id = info.sae_id if info is not None else None
    return {item.latent: item for item in steering.items
            if item.kind == "clamp" and item.latent is not None and (not item.sae_id or item.sae_id == sae_id)}


def intervention_of(session, latent: int):
    """The steering list's clamp of ``latent`` on the loaded SAE (an ``InterventionInfo``), or None."""
    return clamped_latents(session).get(latent)


def describe_intervention(item) -> str:
    """``ablated`` / ``clamped to 3 × max`` (and ``, off`` when switched off); empty for None."""
    if item is None:
        return ""
    if item.value == 0:
        text = "ablated"
    elif item.mode == "max_multiple":
        text = f"clamped to {item.value:g} × max"
    else:
        text = f"clamped to {item.value:g}"
    return text + ("" if item.enabled else " (switched off)")


class DashboardModel(Observable):
    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.meters = MetersModel.of(session)
        self.sae = self.meters.sae
        self.steering = SteeringModel.of(session)  # registered, so the clamps list is kept
        self.density: LatentDensity | None = None
        self.density_request: int | None = None
        self.explanations: dict[int, LatentExplained] = {}
        """Model-written explanations by latent (kept while the SAE stays loaded)."""
        self.explain_request: int | None = None
        self.label_path = ""
        """The ``labels.json`` the last label edit was saved in."""
        self.meters.subscribe(self._on_meters)

    @classmethod
    def of(cls, session) -> "DashboardModel":
        return attach(session, "dashboard", cls)

    @property
    def latent(self) -> int | None:
        return self.meters.selected

    @property
    def record(self):
        """The selected latent's ``LatentRecord`` once it arrived, else None."""
        record = self.sae.record
        return record if record is not None and record.latent == self.latent else None

    def label_source(self) -> str:
        return label_source(self.record, self.label_path)

    def intervention(self):
        return None if self.latent is None else intervention_of(self.session, self.latent)

    # -- actions -----------------------------------------------------------------------------------------
    def show(self, latent: int) -> None:
        """Show ``latent`` (the meters and the SAE panel follow)."""
        self.meters.select(int(latent))

    def request_density(self) -> int | None:
        if self.latent is None or self.sae.info is None:
            return None
        pending = self.session.request(self.density_request) if self.session.is_active(self.density_request) else None
        if pending is not None and pending.latent == self.latent:
            return self.density_request  # already asked (the record's arrival re-announces the latent)
        self.density_request = self.session.submit(
            GetLatentDensity(request_id=self.session.new_id(), latent=int(self.latent)), channel="sae-density")
        return self.density_request

    def explain(self) -> int | None:
        """Ask the loaded model to explain the selected latent and score it (answer: ``explanation``)."""
        if self.latent is None or self.sae.info is None:
            return None
        self.explain_request = self.session.submit(
            ExplainLatent(request_id=self.session.new_id(), latent=int(self.latent)), channel="sae-explain")
        self.notify("explanation")
        return self.explain_request

    @property
    def explanation(self) -> LatentExplained | None:
        return None if self.latent is None else self.explanations.get(self.latent)

    @property
    def explaining(self) -> bool:
        return self.session.is_active(self.explain_request)

    def set_label(self, text: str) -> int | None:
        """Save the user's label of the selected latent (empty: back to the automatic label)."""
        if self.latent is None or self.sae.info is None:
            return None
        return self.session.submit(SetLatentLabel(request_id=self.session.new_id(), latent=int(self.latent),
                                                  text=text.strip()))

    # -- events -------------------------------------------------------------------------------------------
    def _on_meters(self, what: str) -> None:
        if what == "selected":
            if self.density is not None and self.density.latent != self.latent:
                self.density = None
                self.notify("density")
            self.notify("latent")

    def handle_event(self, event) -> None:
        if isinstance(event, LatentDensity):
            if event.latent == self.latent:
                self.density = event
                self.notify("density")
        elif isinstance(event, LatentLabelChanged):
            self.label_path = event.path
            info = self.sae.info
            if info is not None and 0 <= event.latent < len(info.labels):
                labels = list(info.labels)
                labels[event.latent] = event.label
                self.sae.info = replace(info, labels=tuple(labels))
            record = self.sae.record
            if record is not None and record.latent == event.latent:
                user = event.label if event.source == "user" else ""
                self.sae.record = replace(record, label=event.label, user_label=user)
            self.sae.notify("labels")  # the tables and meters show the new label
            self.notify("label")
        elif isinstance(event, LatentExplained):
            self.explanations[event.latent] = event
            self.notify("explanation")
        elif isinstance(event, Failed) and event.request_id == self.density_request:
            self.density_request = None
            self.notify("density")
        elif isinstance(event, (Failed, Finished)) and event.request_id == self.explain_request:
            self.explain_request = None
            self.notify("explanation")
        elif isinstance(event, (SaeLoaded, SaeUnloaded, ModelLoaded)):
            self.density = None
            self.explanations = {}
            self.notify("density")
            self.notify("explanation")
