"""Loading a model (with stage progress) and estimating its memory before loading."""

from __future__ import annotations

from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import EstimateModel, LoadModel, ModelEstimate, ModelInfo, ModelLoaded, ModelUnloaded


@handles(EstimateModel)
def estimate(state: EngineState, request: EstimateModel, ctx: HandlerContext) -> None:
    from mlx_hooks.hub import cached_snapshot
    from mlx_hooks.loader import estimate_for, resolve_source

    source = resolve_source(request.spec)
    if source.kind == "hub" and cached_snapshot(source.location) is None:
        # a repo not downloaded yet: its headers are read beside the engine thread (network waits)
        ctx.continue_off_thread(lambda side: _estimate_remote(request, source.location, side))
        return
    ctx.progress(0, 1, f"reading {request.spec} (a GGUF is converted once, into the cache)")
    _emit_estimate(request, estimate_for(request.spec, request.runtime_dtype), ctx)


def _estimate_remote(request: EstimateModel, repo_id: str, ctx: HandlerContext) -> None:
    from mlx_hooks.hub import plan_download
    from mlx_hooks.loader import estimate_for_plan

    ctx.progress(0, 1, f"reading {repo_id}'s config and safetensors headers from the Hub (no weights)")
    plan = plan_download(repo_id)
    _emit_estimate(request, ctx.on_engine_thread(lambda: estimate_for_plan(plan, request.runtime_dtype)), ctx)


def _emit_estimate(request: EstimateModel, est, ctx: HandlerContext) -> None:
    from mlx_hooks.memory import default_budget_bytes

    ctx.emit(ModelEstimate(request_id=request.request_id, spec=request.spec, total_bytes=int(est.total_bytes),
                           budget_bytes=int(default_budget_bytes()),
                           description=est.describe(), runtime_dtype=est.runtime_dtype))


def _needs_conversion(spec: str) -> bool:
    from pathlib import Path

    from mlx_hooks.gguf_convert import converted_dir_for
    from mlx_hooks.loader import default_model_path, resolve_source

    source = resolve_source(spec)
    if source.kind not in ("default", "gguf"):
        return False
    gguf = default_model_path() if source.kind == "default" else Path(source.location)
    return not (converted_dir_for(gguf) / "config.json").is_file()


@handles(LoadModel)
def load(state: EngineState, request: LoadModel, ctx: HandlerContext) -> None:
    from mlx_hooks.backend import backend_info
    from mlx_hooks.chat import ChatSession
    from mlx_hooks.hooks import hook_points
    from mlx_hooks.loader import estimate_for, load_model
    from mlx_hooks.memory import default_budget_bytes

    total = 4
    ctx.progress(0, total, f"resolving {request.spec}")
    if _needs_conversion(request.spec):
        # mlx-hooks converts GGUF in one call with no callback: a stage, not a percentage.
        ctx.progress(1, total, "converting the GGUF file into the cache (once)")
    # Read the config and weight headers before letting go of the loaded model: a broken
    # folder (no config.json, unreadable safetensors, unknown architecture) fails here and
    # the old model stays loaded, as the window still shows it.
    estimate_for(request.spec, request.runtime_dtype)
    if ctx.is_cancelled():
        return
    ctx.progress(2, total, "loading weights")
    previous = state.loaded.name if state.loaded is not None else None
    state.reset_model()
    if previous is not None:
        # From here a failure leaves no model: the window hears it now, not when the load ends.
        ctx.emit_change(ModelUnloaded(request_id=request.request_id, name=previous))
    # A cancel from here on is too late: the load is one MLX call, and throwing the finished
    # model away would only leave the engine without one. It is installed and announced
    # (ModelLoaded reaches the window even for a cancelled request).
    loaded = load_model(request.spec, runtime_dtype=request.runtime_dtype)
    ctx.progress(3, total, "preparing the chat")
    state.loaded = loaded
    state.chat = ChatSession(loaded.model, loaded.tokenizer)
    state.changed()
    info = backend_info()
    fp = loaded.fingerprint
    ctx.progress(total, total, "loaded")
    ctx.emit_change(ModelLoaded(request_id=request.request_id, info=ModelInfo(
        name=loaded.name, spec=request.spec, fingerprint=fp.short, n_layers=fp.n_layers, d_model=fp.d_model,
        vocab_size=fp.vocab_size, hook_points=tuple(hook_points(loaded.model)), runtime_dtype=loaded.runtime_dtype,
        backend=info.summary(), slow_blas_warning=info.slow_blas_warning, memory_bytes=int(loaded.estimate.total_bytes),
        budget_bytes=int(default_budget_bytes()),
    )))
