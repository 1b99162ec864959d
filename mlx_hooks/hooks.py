"""Attach captures and interventions to an mlx-lm model, and always take them off.

    with hooked(model, capture=["resid_post.3"], interventions={"resid_post.5": [AddVector(v, 4.0)]}) as hooks:
        logits = model(tokens)
    hooks.recorder.stack("resid_post.3")   # [B, L, D]

Only the modules that carry a requested point are wrapped, and the wrappers are
``nn.Module``s that keep the original as a child (``inner``), so parameters stay
visible to LoRA, saving and quantization while attached. The backbone is wrapped too,
to learn each forward call's absolute positions from the KV cache (``cache[0].offset``):
that is what keeps position masks and the recorder correct under mlx-lm's prefill
chunks and 1-token decode steps. Everything is restored in ``finally:``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn

from .activation_cache import ActivationRecorder, CacheConfig
from .errors import NonFiniteError
from .interventions import ForwardContext, Intervention
from .points import HookPoint, ModelAdapter


class _HookWrapper(nn.Module):
    """Runs a module and passes its input/output through the session's point handlers."""

    _is_hook_wrapper = True

    def __init__(self, inner: nn.Module, session: "HookSession", role: str, layer: int = -1, reads_input: bool = False):
        super().__init__()
        self.inner = inner
        # Plain attributes (not arrays/modules) stay out of the parameter tree.
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_role", role)
        object.__setattr__(self, "_layer", layer)
        object.__setattr__(self, "_reads_input", reads_input)
        # A block's two point names, made once: this runs for every layer at every decode step.
        object.__setattr__(self, "_block_points", (f"resid_pre.{layer}", f"resid_post.{layer}"))

    def __getattr__(self, name: str) -> Any:
        # mlx-lm reads attributes of layers and modules (e.g. `use_sliding` in
        # make_cache, `as_linear` on tied embeddings): forward what we don't have.
        if name in self:
            return self[name]
        if "inner" not in self:
            raise AttributeError(name)
        return getattr(self["inner"], name)

    def __call__(self, *args, **kwargs):
        session: HookSession = self._session
        role = self._role
        if role == "block":
            pre, post = self._block_points
            x, *rest = args
            out = self["inner"](session._handle(pre, x), *rest, **kwargs)
            if isinstance(out, tuple):  # some blocks return (hidden, extras)
                return (session._handle(post, out[0]), *out[1:])
            return session._handle(post, out)
        if role == "backbone":
            session._begin_forward(args, kwargs)
            try:
                out = self["inner"](*args, **kwargs)
            except BaseException:
                session._record_forward()  # what the call captured before it failed is still kept
                raise
            return session._end_forward(out)
        if self._reads_input:  # attn_z / mlp_hidden: the input of an output or down projection
            x, *rest = args
            return self["inner"](session._handle(role, x), *rest, **kwargs)
        return session._handle(role, self["inner"](*args, **kwargs))  # role is the point name (embed, attn_out.i, mlp_out.i)


class HookSession:
    """Captures and interventions for one model; attach with :meth:`attached`."""

    def __init__(
        self,
        model: nn.Module,
        capture: Iterable[str] = (),
        interventions: Mapping[str, Sequence[Intervention] | Intervention] | None = None,
        recorder: ActivationRecorder | None = None,
        cache_config: CacheConfig | None = None,
        prompt_length: int | None = None,
    ):
        self.model = model
        self.adapter = ModelAdapter(model)
        self.capture_points: list[str] = [self.adapter.parse(p).name for p in capture]
        self._capture_set = frozenset(self.capture_points)  # _handle runs once per point per forward
        self.row_points: list[str] = list(dict.fromkeys(self.capture_points))
        """The captured points in the order :meth:`last_position_row` concatenates them."""
        self.keep_last_position = False
        """Keep, per forward call, the last position of every captured point as one lazy row (see
        :meth:`last_position_row`); streamed generation turns it on."""
        self._forward_captures: dict[str, mx.array] = {}  # point -> [B, L, D] captured in the current forward
        self._in_forward = False  # between the backbone wrapper's _begin_forward and its end
        self._last_rows: dict[int, mx.array] = {}  # absolute position -> [B, 1, sum of widths]
        self.recorder = recorder or ActivationRecorder(cache_config)
        self.prompt_length = prompt_length
        self.interventions: dict[str, list[Intervention]] = {}
        self.ctx: ForwardContext | None = None
        self._restore: list[tuple[Any, Any, Any]] = []  # (container, key, original)
        self._attached = False
        self._wrapped_points: set[str] = set()
        self._edited: list[tuple[str, mx.array]] = []  # (point, lazy "still finite" flag) per edit, see check_finite
        self.watch_finite = False
        """Keep a flag per edited activation for :meth:`check_finite` (generation turns it on and checks
        every step; off, nothing is kept, so a caller that never checks holds no extra arrays)."""
        for point, items in (interventions or {}).items():
            for item in items if isinstance(items, (list, tuple)) else [items]:
                self.add(point, item)

    # -- interventions -----------------------------------------------------------------
    def add(self, point: str, intervention: Intervention) -> None:
        """Attach an intervention (also while attached: the next forward sees it)."""
        name = self.adapter.parse(point).name
        self.interventions.setdefault(name, []).append(intervention)
        if self._attached:  # (not `_restore`: a session attached with no points has wrapped nothing yet)
            self._wrap(name)

    def remove(self, point: str, intervention: Intervention) -> None:
        name = self.adapter.parse(point).name
        self.interventions.get(name, []).remove(intervention)

    def clear_interventions(self) -> None:
        self.interventions.clear()

    # -- the forward path ---------------------------------------------------------------
    def _begin_forward(self, args: tuple, kwargs: dict) -> None:
        inputs = args[0] if args else kwargs.get("inputs")
        cache = kwargs.get("cache", args[1] if len(args) > 1 else None)
        first = cache[0] if cache else None
        offset = getattr(first, "offset", 0) if first is not None else 0
        embeddings = kwargs.get("input_embeddings")
        length = inputs.shape[1] if inputs is not None and inputs.ndim > 1 else embeddings.shape[1]
        self.ctx = ForwardContext.from_offset(offset, length, self.prompt_length)
        self._forward_captures = {}
        self._in_forward = True

    def _record_forward(self) -> None:
        """Hand the forward call's captures to the recorder in one call (not one per point: this runs
        at every decode step, and 37 separate records cost ~30 µs of host time per step)."""
        self._in_forward = False
        if self._forward_captures:
            self.recorder.record_forward(self._forward_captures, self.ctx.start)

    def _end_forward(self, out):
        self._record_forward()
        if not (self.keep_last_position and self._forward_captures):
            return out
        if len(self._forward_captures) < len(self.row_points):
            return out  # a point this forward did not reach (the caller falls back to the recorder)
        captured = [self._forward_captures[p] for p in self.row_points]  # [B, L, D_p] each
        if captured[0].shape[1] == 1 and all(x.dtype == mx.float32 for x in captured):
            # A decode step in float32: the captures are already the row, read one by one on the host.
            # A concatenate here cost ~0.3 ms per step on the CPU backend (a copy task per point).
            row: mx.array | list[mx.array] = captured
        else:
            # One concatenate per forward instead of a slice, reshape and transfer per point
            # (37 points cost ~6% of a decode step).
            row = mx.concatenate([x if x.shape[1] == 1 else x[:, -1:] for x in captured], axis=-1)  # [B, 1, sum D_p]
            if row.dtype != mx.float32:
                row = row.astype(mx.float32)  # numpy has no bfloat16; converted here, with the forward
        # The backbone's output is made to depend on the row, so it is computed by the evaluation
        # mlx-lm schedules for the step; evaluated later it would queue behind the next, already
        # scheduled, decode step.
        if isinstance(out, mx.array):
            out = mx.depends(out, row)
        else:
            mx.async_eval(row)
        last = self.ctx.start + captured[0].shape[1] - 1
        self._last_rows = {p: r for p, r in self._last_rows.items() if p > last - 4}  # a few steps in flight
        self._last_rows[last] = row
        return out

    def last_position_row(self, position: int) -> mx.array | list[mx.array] | None:
        """The captured points at ``position`` in :attr:`row_points` order, float32, if a recent
        forward call ended there (only with :attr:`keep_last_position`): one ``[B, 1, sum of widths]``
        array, or for a float32 decode step the list of the points' own ``[B, 1, D_p]`` arrays.
        Read it with ``np.array`` and index on the host: an MLX op on it now would queue behind the
        decode step already scheduled."""
        return self._last_rows.pop(position, None)

    def _handle(self, point: str, x: mx.array) -> mx.array:  # x: [B, L, D]
        # Runs for every wrapped point at every decode step: the common cases cost a dict lookup each.
        edits = self.interventions.get(point)
        if edits:
            x = self._edit(point, x, edits)
        if point in self._capture_set:
            self._capture(point, x)
        return x

    def _context(self, x: mx.array) -> ForwardContext:
        return self.ctx or ForwardContext.from_offset(0, x.shape[1], self.prompt_length)

    def _edit(self, point: str, x: mx.array, edits: list[Intervention]) -> mx.array:
        ctx = self._context(x)
        for intervention in edits:
            edited = intervention(x, ctx)
            x = edited if edited.dtype == x.dtype else edited.astype(x.dtype)
        if self.watch_finite:
            # Lazy, evaluated by check_finite: every position's squared norm must be finite in float32,
            # which is what the next norm layer computes (a finite 1e30 overflows there, and the model
            # then answers from zeros: finite garbage, not an error).
            self._edited.append((point, mx.all(mx.isfinite(mx.sum(mx.square(x.astype(mx.float32)), axis=-1)))))
        return x

    def _capture(self, point: str, x: mx.array) -> None:
        # A new handle on the same graph node (no op, no copy): the model may go on to change `x`
        # in place (gemma3's `h *= sqrt(d)` right after the embedding), which rebinds `x`'s handle
        # but not this one.
        kept = mx.array(x)
        if self._in_forward:
            self._forward_captures[point] = kept  # recorded when the call ends (_record_forward)
        else:  # a module called on its own, outside the backbone
            self.recorder.record(point, kept, self._context(x).start)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` naming the point and interventions if an intervention made an
        activation non-finite (or one whose norm overflows float32) in the forward calls since the last
        check. Evaluates one boolean per edited point and call; nothing when there are no interventions."""
        if not self._edited:
            return
        pending, self._edited = self._edited, []
        mx.eval([flag for _, flag in pending])
        bad = sorted({point for point, flag in pending if not flag.item()})
        if bad:
            what = "; ".join(f"{p}: {', '.join(type(i).__name__ for i in self.interventions.get(p, ()))}" for p in bad)
            raise NonFiniteError(
                f"an intervention made the activation at {', '.join(bad)} non-finite (NaN/inf, or a norm past "
                f"float32's range) — generation stopped; use a smaller coefficient or value ({what})")

    # -- wrapping ---------------------------------------------------------------------------
    def _replace(self, container: Any, key: Any, wrapper: nn.Module) -> None:
        self._restore.append((container, key, container[key]))
        container[key] = wrapper

    def _wrap(self, name: str) -> None:
        if name in self._wrapped_points:
            return
        point = self.adapter.parse(name)
        backbone = self.adapter.backbone
        if not self._restore:
            # Wrap whatever is there now (another session's wrapper, when sessions nest),
            # so every attached session sees each forward call.
            parent, attr = self.adapter.decoder_parent, self.adapter.backbone_attr
            self._replace(parent, attr, _HookWrapper(parent[attr], self, "backbone"))
        if point.kind == "embed":
            self._replace(backbone, "embed_tokens", _HookWrapper(backbone["embed_tokens"], self, "embed"))
        elif point.kind in ("resid_pre", "resid_post"):
            layers = backbone["layers"]
            if getattr(layers[point.layer], "_session", None) is not self:  # not yet wrapped by this session
                self._replace(layers, point.layer, _HookWrapper(layers[point.layer], self, "block", point.layer))
        else:
            site = self.adapter.site(point.layer, point.kind)
            wrapper = _HookWrapper(site.container[site.attr], self, name, reads_input=site.reads_input)
            self._replace(site.container, site.attr, wrapper)
        self._wrapped_points.add(name)
        # resid_pre and resid_post share one block wrapper
        if point.kind in ("resid_pre", "resid_post"):
            self._wrapped_points.update({f"resid_pre.{point.layer}", f"resid_post.{point.layer}"})

    def _unwrap_all(self) -> None:
        while self._restore:
            container, key, original = self._restore.pop()
            container[key] = original
        self._wrapped_points.clear()
        self.ctx = None
        self._in_forward = False
        self._forward_captures, self._last_rows = {}, {}  # mlx-lm runs one forward more than it yields

    @contextmanager
    def attached(self) -> Iterator["HookSession"]:
        """Wrap the model for this session's points; always restore it."""
        if self._attached:
            raise RuntimeError("this HookSession is already attached")
        self._attached = True
        try:
            for name in [*self.capture_points, *self.interventions]:
                self._wrap(name)
            yield self
        finally:
            self._attached = False
            self._unwrap_all()


@contextmanager
def hooked(
    model: nn.Module,
    capture: Iterable[str] = (),
    interventions: Mapping[str, Sequence[Intervention] | Intervention] | None = None,
    recorder: ActivationRecorder | None = None,
    cache_config: CacheConfig | None = None,
    prompt_length: int | None = None,
) -> Iterator[HookSession]:
    """Attach captures/interventions to ``model`` for the ``with`` block."""
    session = HookSession(model, capture, interventions, recorder, cache_config, prompt_length)
    with session.attached():
        yield session


def hook_points(model: nn.Module) -> list[str]:
    """Every hook point name of ``model``, in forward order."""
    return ModelAdapter(model).point_names()


def parse_point(model: nn.Module, name: str) -> HookPoint:
    return ModelAdapter(model).parse(name)
