"""What the engine thread holds: the model, the chat, steering, clamps and the SAE meter.

Lives only on the engine thread (handlers receive it); the GUI never sees these
objects, only the events the handlers emit about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EngineState:
    loaded: Any = None
    """``mlx_hooks.loader.LoadedModel`` or None."""
    chat: Any = None
    """``mlx_hooks.chat.ChatSession`` or None (made when a model loads)."""
    steering: Any = None
    """``mlx_hooks.steering.SteeringSet`` for the loaded model (made when a model loads)."""
    clamps: dict[str, dict[str, list]] = field(default_factory=dict)
    """Clamp name -> {hook point: [interventions]} (SAE clamps / ablations)."""
    disabled_clamps: set[str] = field(default_factory=set)
    """Names in ``clamps`` that are switched off (kept, not applied)."""
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
        """Call after changing steering, clamps or the meter: a streaming reply picks it up at its next token."""
        self.revision += 1

    def interventions(self) -> dict[str, list]:
        """Steering vectors plus enabled clamps, as ``{hook point: [intervention, ...]}``."""
        merged: dict[str, list] = {}
        if self.steering is not None:
            for point, items in self.steering.interventions().items():
                merged.setdefault(point, []).extend(items)
        for name, by_point in self.clamps.items():
            if name in self.disabled_clamps:
                continue
            for point, items in by_point.items():
                merged.setdefault(point, []).extend(items)
        return merged

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
        self.loaded = self.chat = self.steering = self.sae = self.sae_id = self.meter = None
        self.clamps.clear()
        self.disabled_clamps.clear()
        self.extras.clear()
        self.changed()
        if had_model:
            release_freed_memory()
