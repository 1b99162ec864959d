"""Hub downloads beside the engine thread: estimate and verdict first, then the bytes, with progress and cancel.

The handler runs on the engine thread only long enough to look in the local cache; the
network part continues on a plain thread (``ctx.continue_off_thread``), so the engine keeps
serving the model already loaded. The estimate is computed back on the engine thread
(``ctx.on_engine_thread``: reading a config may touch MLX). When ``ModelDownloaded`` arrives
the session queues the ``LoadModel`` itself.
"""

from __future__ import annotations

from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import DownloadModel, DownloadPlanned, DownloadStep, ModelDownloaded


@handles(DownloadModel)
def download(state: EngineState, request: DownloadModel, ctx: HandlerContext) -> None:
    from mlx_hooks.hub import cached_snapshot
    from mlx_hooks.loader import resolve_source
    from mlx_hooks.memory import default_budget_bytes

    source = resolve_source(request.spec)
    if source.kind != "hub":
        ctx.emit(ModelDownloaded(request_id=request.request_id, spec=request.spec, folder=source.location, cached=True))
        return
    folder = cached_snapshot(source.location)
    if folder is not None:
        ctx.emit(ModelDownloaded(request_id=request.request_id, spec=request.spec, folder=str(folder), cached=True))
        return
    budget = default_budget_bytes()
    ctx.continue_off_thread(lambda side: _fetch(request, source.location, budget, side))


def _fetch(request: DownloadModel, repo_id: str, budget: int, ctx: HandlerContext) -> None:
    """On the download thread: plan, estimate (on the engine thread), verdict, download."""
    from mlx_hooks.hub import fetch_model
    from mlx_hooks.loader import estimate_for_plan

    rid = request.request_id

    def estimate(plan):
        return ctx.on_engine_thread(lambda: estimate_for_plan(plan, request.runtime_dtype))

    def planned(plan, memory) -> None:
        ctx.emit(DownloadPlanned(request_id=rid, spec=request.spec, download_bytes=plan.missing_bytes,
                                 n_files=len(plan.missing), estimate_bytes=int(memory.total_bytes),
                                 budget_bytes=int(budget), description=memory.describe()))

    folder = fetch_model(repo_id, estimate=estimate, budget_bytes=budget, on_plan=planned,
                         on_progress=lambda progress: ctx.emit(DownloadStep(request_id=rid, progress=progress)),
                         should_cancel=ctx.is_cancelled)
    ctx.emit(ModelDownloaded(request_id=rid, spec=request.spec, folder=str(folder), cached=False))
