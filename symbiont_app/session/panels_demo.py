"""What ``symbiont-app --screenshots`` asks of the meters / steering / SAE / lens panels, Qt-free.

``before_conversation(session)`` once the model is loaded (the engine runs requests in
order, so the SAE is in place before the first reply); ``after_conversation(session)``
once the scripted conversation finished. Each returns the request ids it submitted;
wait until the session has nothing active before taking the screenshots.
"""

from __future__ import annotations

from .dashboard import DashboardModel
from .lens import LensModel
from .meters import MetersModel
from .sae import SaeModel
from .steering import SteeringModel

PATCHING_DEMO = ("The capital of France is", "The capital of Italy is", " Paris", " Rome")


def before_conversation(session, sae: str | None = None) -> list[int]:
    """Load the shipped SAE (or ``sae``) and add a built-in steering vector, switched off."""
    ids = []
    model = SaeModel.of(session)
    LensModel.of(session)  # registered now, so the lens runs after the first reply
    attached = model.info is not None or model.load_request is not None  # first_run.AutoAttachSae did it
    if sae is None and not attached:
        available = model.refresh_available()
        sae = available[0].path if available else None
    if sae is not None:
        ids.append(model.load(sae))
    # Switched off: the panel shows a slider and the conversation stays the model's own.
    ids.append(SteeringModel.of(session).build("happy_sad", contrast_set="happy_sad", coefficient=0.2,
                                               enabled=False))
    return ids


def after_conversation(session) -> list[int]:
    """Watch the conversation's most frequent latents, open the first one's record (and its dashboard,
    with an explanation), ablate the second, run the lens and patching."""
    meters = MetersModel.of(session)
    frequent = meters.frequent_latents(3)
    for latent in frequent:
        meters.watch(latent)
    ids = []
    if frequent:
        meters.select(frequent[0])
        DashboardModel.of(session).explain()  # the dashboard shows a model-written, scored explanation
    if len(frequent) > 1:
        meters.ablate(frequent[1])  # marked in the meters (the conversation is over: no reply changes)
    lens = LensModel.of(session)
    if lens.lens_request is None or lens.lens is None:
        ids.append(lens.run_lens())
    ids.append(lens.run_patching(*PATCHING_DEMO))
    return ids
