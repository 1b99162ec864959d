"""What the engine thread holds: the model, the chat, the intervention table and the SAE meter.

Lives only on the engine thread (handlers receive it); the GUI never sees these
objects, only the events the handlers emit about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .intervention_table import InterventionTable


@dataclass
class EngineState:
    loaded: Any = None
    """``mlx_hooks.loader.LoadedModel`` or None."""
    chat: Any = None
    """``mlx_hooks.chat.ChatSession`` or None (made when a model loads)."""
    table: InterventionTable = field(default_factory=InterventionTable)
    """Steering vectors, SAE clamps and ablations in the order the user added them, switched-off
    ones included: what generation applies and what the steering panel lists both come from it."""
    sae: Any = None
    """``mlx_hooks.sae`` SAE or None."""
    sae_id: str | None = None
    meter: Any = None
    """``mlx_hooks.sae.meters.FeatureMeter`` or None: read at every generated token."""
    extras: dict = field(default_factory=dict)
    """Anything else a handler module keeps (key it by the module's name)."""
    revision: int = 0
    """Bumped by :meth:`changed`; a running reply re-reads interventions when it moves."""

    def changed(self) -> None:
        """Call after changing the table or the meter: a streaming reply picks it up at its next token."""
        self.revision += 1

    def interventions(self) -> dict[str, list]:
        """The table's enabled entries as ``{hook point: [intervention, ...]}``, in table order."""
        return self.table.interventions()

    def generation_kwargs(self) -> dict:
        """Keyword arguments for ``ChatSession.send`` / ``hooked_stream_generate``.

        With a meter: its capture point, its tap appended last at its point (it must see
        the clamped activations), and the meter as the ``"sae"`` reader.
        """
        interventions = self.interventions()
        if self.meter is None:
            return {"interventions": interventions}
        kwargs = self.meter.generate_kwargs(interventions)
        kwargs["readers"] = {"sae": self.meter}
        return kwargs

    def reset_model(self) -> None:
        """Forget everything tied to the previous model (a new one is loading) and give its
        memory back: MLX would otherwise keep the freed buffers cached, and the old model's
        claim (seen by other Symbiont processes' budgets) would outlive it."""
        from mlx_hooks.memory import release_freed_memory

        had_model = self.loaded is not None
        self.loaded = self.chat = self.sae = self.sae_id = self.meter = None
        self.table.clear()
        self.extras.clear()
        self.changed()
        if had_model:
            release_freed_memory()
