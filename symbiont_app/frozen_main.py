"""Entry point of the packaged app (``Symbiont.app``, the Linux one-folder bundle).

    Symbiont                      the desktop window (default model, SAE meters to come)
    Symbiont --cli <args>         run a `symbiont` sub-command (the app's lab panel uses it)
    Symbiont --self-check         load the default model from the bundle, generate a few
                                  tokens with the shipped SAE's feature meters on, print a
                                  report, exit 0 (or 1 with the error)
    Symbiont --metal-check        only: does the bundle's Metal library load and a GPU kernel
                                  run right (exit 0; 1 broken; 3 no usable GPU on this machine)

Works unfrozen too (``python -m symbiont_app.frozen_main --self-check``). The first start
converts the bundled GGUF once into the user's cache folder (``~/Library/Caches/Symbiont``
on macOS, ``$XDG_CACHE_HOME/symbiont`` on Linux; ``SYMBIONT_CACHE_DIR`` overrides); the
window shows a progress dialog meanwhile. Nothing is written inside the bundle and
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

from mlx_hooks.backend import reexec_with_fast_blas

SELF_CHECK_PROMPT = "What is the capital of France?"


def _parser() -> argparse.ArgumentParser:
    from .about import version_line

    parser = argparse.ArgumentParser(prog="Symbiont", description="Symbiont desktop app",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line("Symbiont"),
                        help="print the app's version and those of MLX, mlx-lm, PySide6 and Python, and exit")
    parser.add_argument("--model", default=None,
                        help="model to open: default, a repo id, a folder or a .gguf (window: the last model "
                             "loaded, else the default model; self-check: the default model)")
    parser.add_argument("--self-check", action="store_true",
                        help="load the model, generate a few tokens with SAE meters on, print a report and exit")
    parser.add_argument("--sae", help="self-check: this SAE folder instead of the shipped one matching the model")
    parser.add_argument("--prompt", default=SELF_CHECK_PROMPT, help="self-check: the user message")
    parser.add_argument("--max-tokens", type=int, default=8, help="self-check: tokens to generate (default 8)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="self-check: MLX device (auto: the GPU when it passes the Metal check; gpu: "
                             "fail without a usable GPU)")
    parser.add_argument("--metal-check", action="store_true",
                        help="only check Metal: the bundle's mlx.metallib loads and GPU kernels match the CPU "
                             "(exit 0; 1 broken; 3 no usable GPU here)")
    parser.add_argument("--report-json", help="self-check / metal check: also write the report as JSON to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # A multiprocessing worker (the negation lab's --workers pool; spawn start method)
        # starts as `Symbiont --multiprocessing-fork ...` in the frozen app, its resource
        # tracker as `Symbiont -c "from multiprocessing.resource_tracker import main..."`:
        # run that here and exit, before anything opens a window. PyInstaller's runtime
        # hook makes freeze_support() do this on every platform; unfrozen it does nothing.
        multiprocessing.freeze_support()
        reexec_with_fast_blas()  # Linux: preload OpenBLAS before MLX loads (no-op on macOS)
        argv = sys.argv[1:]
    if argv[:1] == ["--cli"]:
        # `Symbiont --cli lab aux-logits ...`: the frozen app has no `python -m`, so the app's lab
        # panel runs its experiments (separate processes) through this entry.
        from .cli import main as cli_main

        return cli_main(argv[1:])
    # Finder may add arguments of its own (-psn_… on old macOS): ignore what we do not know.
    args, _unknown = _parser().parse_known_args(argv)
    if args.metal_check:
        from mlx_hooks.metal_check import main as metal_check

        return metal_check(["--json", args.report_json] if args.report_json else [])
    if args.self_check:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display: Qt would abort, not raise
        return self_check(args.model or "default", sae_path=args.sae, prompt=args.prompt, max_tokens=args.max_tokens,
                          device=args.device, report_json=args.report_json)
    from .gui import start_model

    return run_gui(start_model(args.model))


# -- self-check ---------------------------------------------------------------------------------------
def self_check(
    model_spec: str = "default",
    *,
    sae_path: str | None = None,
    sae_root: str | Path | None = None,
    prompt: str = SELF_CHECK_PROMPT,
    max_tokens: int = 8,
    device: str = "auto",
    report_json: str | None = None,
    out=None,
) -> int:
    """Run the check, print the report to ``out`` (stdout); 0 when everything worked, else 1.

    The SAE is ``sae_path``, else the one under ``sae_root`` (default: the shipped SAEs)
    whose recorded fingerprint matches the loaded model.
    """
    out = out or sys.stdout
    report: dict = {"ok": False}

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    say("Symbiont self-check")
    try:
        _run_checks(report, say, model_spec, sae_path, sae_root, prompt, max_tokens, device)
        report["ok"] = True
        say("self-check: OK")
        status = 0
    except Exception as exc:  # noqa: BLE001 - the point is to report any failure and exit non-zero
        report["error"] = f"{type(exc).__name__}: {exc}"
        say(f"self-check: FAILED: {report['error']}")
        traceback.print_exc(file=sys.stderr)
        status = 1
    if report_json:
        from mlx_hooks.atomic_io import atomic_write_bytes

        atomic_write_bytes(report_json, (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode())
    return status


def _run_checks(report: dict, say, model_spec, sae_path, sae_root, prompt, max_tokens, device) -> None:
    from importlib.metadata import PackageNotFoundError, version

    from .bundle import bundle_root, find_saes_for, inside, is_frozen, shipped_sae_root, user_data_dir

    try:
        app_version = version("symbiont")
    except PackageNotFoundError:
        app_version = "unknown"
    bundle = bundle_root()
    report.update(version=app_version, frozen=is_frozen(), bundle=str(bundle) if bundle else None)
    say(f"app: symbiont {app_version} ({'frozen: ' + str(bundle) if bundle else 'not frozen'})")

    import mlx.core as mx

    from mlx_hooks.backend import backend_info
    from mlx_hooks.gguf_convert import converted_dir_for, default_cache_dir
    from mlx_hooks.loader import default_model_path, load_model, resolve_source

    from mlx_hooks.metal_check import check_metal

    metal = None if device == "cpu" else check_metal()
    if metal is not None:
        report["metal"] = metal.to_dict()
        say(f"metal: {metal.status}: {metal.detail}" + (f" [{metal.device}]" if metal.device else "")
            + f"; metallib: {metal.metallib or 'not found beside libmlx'}")
        if metal.status == "failed":  # Metal is there but MLX cannot use it: a broken bundle on any Mac
            raise RuntimeError(f"Metal: {metal.detail}")
        if device == "gpu" and not metal.usable:
            raise RuntimeError(f"--device gpu: no usable GPU on this machine ({metal.status}: {metal.detail})")
    if metal is None or not metal.usable:
        mx.set_default_device(mx.cpu)
        if metal is not None and metal.status == "unusable":
            say("metal: NOT used: running on the CPU (this GPU computes wrong results)")
    else:
        mx.set_default_device(mx.gpu)
    info = backend_info()
    report.update(device=info.device, blas=info.blas_library, blas_is_reference=info.blas_is_reference)
    say(f"backend: {info.device} (Metal available: {info.metal_available}); BLAS: {info.blas_library}"
        + (" [reference BLAS: slow]" if info.blas_is_reference else ""))

    cache, data = default_cache_dir(), user_data_dir()
    report.update(cache_dir=str(cache), data_dir=str(data))
    for name, folder in (("cache", cache), ("user data", data)):
        if inside(folder, bundle):
            raise RuntimeError(f"the {name} folder {folder} lies inside the app bundle {bundle}; set SYMBIONT_CACHE_DIR")
    say(f"user folders: cache {cache}; data {data}")

    source = resolve_source(model_spec)
    first_start = None
    if source.kind == "default":
        gguf = default_model_path()
        converted = converted_dir_for(gguf)
        first_start = not (converted / "config.json").is_file()
        report.update(gguf=str(gguf), gguf_in_bundle=inside(gguf, bundle))
        say(f"default model file: {gguf}" + (" (inside the bundle)" if inside(gguf, bundle) else ""))
    start = time.perf_counter()
    loaded = load_model(model_spec)
    load_s = time.perf_counter() - start
    report.update(model=loaded.name, fingerprint=loaded.fingerprint.short, runtime_dtype=loaded.runtime_dtype,
                  model_folder=str(loaded.folder), load_seconds=round(load_s, 2), converted_now=first_start)
    what = {True: "converted now (first start)", False: "conversion reused", None: "loaded"}[first_start]
    say(f"model: {loaded.name} ({loaded.runtime_dtype}), fingerprint {loaded.fingerprint.short}")
    say(f"model folder: {loaded.folder} ({what}, {load_s:.1f} s)")

    from mlx_hooks.generate import hooked_stream_generate
    from mlx_hooks.sae.formats import load_sae
    from mlx_hooks.sae.meters import FeatureMeter
    from mlx_hooks.sampling import SamplingSettings

    if sae_path:
        folder = Path(sae_path)
    else:
        root = Path(sae_root) if sae_root is not None else shipped_sae_root()
        matches = find_saes_for(loaded.fingerprint, root)
        if not matches:
            raise RuntimeError(f"no SAE in {root} records this model's fingerprint {loaded.fingerprint.short}")
        folder = matches[0].folder
    sae = load_sae(folder, loaded)
    report.update(sae=str(folder), sae_hook_point=sae.cfg.hook_point, sae_latents=sae.cfg.d_sae,
                  sae_labelled=sae.labels is not None)
    say(f"SAE: {folder} ({sae.cfg.architecture}, {sae.cfg.d_sae} latents at {sae.cfg.hook_point}"
        + (", labelled" if sae.labels is not None else "") + ")")

    meter = FeatureMeter(sae, top_n=5)
    tokenizer = loaded.tokenizer
    ids = list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True))
    steps = []
    start = time.perf_counter()
    for step in hooked_stream_generate(loaded.model, tokenizer, ids, max_tokens=max_tokens,
                                       sampling=SamplingSettings(temp=0.0), readers={"sae": meter},
                                       **meter.generate_kwargs()):
        steps.append(step)
    gen_s = time.perf_counter() - start
    if not steps:
        raise RuntimeError("generation produced no tokens")
    missing = [s.index for s in steps if "sae" not in s.readings]
    if missing:
        raise RuntimeError(f"no SAE meter reading at steps {missing}")
    text = "".join(s.text for s in steps)
    last = steps[-1].readings["sae"]
    if not last.top:
        raise RuntimeError("the SAE meter read no active latent at the last step")
    report.update(prompt=prompt, tokens=len(steps), text=text, generate_seconds=round(gen_s, 2),
                  mean_l0=round(sum(s.readings["sae"].l0 for s in steps) / len(steps), 1),
                  last_token=steps[-1].text,
                  top_latents=[{"index": t.index, "value": round(t.value, 3), "label": t.label} for t in last.top])
    say(f"prompt: {prompt!r}")
    say(f"tokens: {len(steps)} in {gen_s:.2f} s ({len(steps) / gen_s:.1f} tok/s): {text!r}")
    say(f"meters: {len(steps)} readings, mean L0 {report['mean_l0']}; "
        f"last step (token {steps[-1].token} {steps[-1].text!r}) top latents:")
    for latent in last.top:
        say(f"  #{latent.index:<6} {latent.value:8.3f}  {latent.label}")
    _check_qt(report, say)


def _check_qt(report: dict, say) -> None:
    """The window's toolkit is in the bundle: the chat window module, and a pyqtgraph plot rendered."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtWidgets import QApplication

    import pyqtgraph as pg

    from . import gui  # noqa: F401 - the window's module imports

    app = QApplication.instance() or QApplication([sys.argv[0]])
    plot = pg.PlotWidget()
    plot.plot([0, 1, 2, 3], [0.0, 1.0, 0.5, 2.0])
    plot.resize(320, 200)
    image = plot.grab().toImage()
    if image.isNull() or image.width() < 1:
        raise RuntimeError("Qt: a pyqtgraph plot could not be rendered")
    plot.deleteLater()
    report.update(qt_platform=app.platformName(), pyside=pyside_version, pyqtgraph=pg.__version__)
    say(f"qt: PySide6 {pyside_version}, pyqtgraph {pg.__version__}: a plot rendered "
        f"({image.width()}x{image.height()}, platform {app.platformName()})")


# -- the window ---------------------------------------------------------------------------------------
def run_gui(model_spec: str = "default") -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication, QProgressDialog

    from .bundle import APP_NAME, BUNDLE_ID, resource_root
    from .gui import build_window, exit_after

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setOrganizationDomain(BUNDLE_ID.rsplit(".", 1)[0])
    icon = resource_root() / "symbiont.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))

    cache_folder = _pending_conversion(model_spec)
    window = build_window(model_spec)
    window.show()
    if cache_folder is not None:
        # First start: the engine thread converts the bundled GGUF (~10 s on a slow CPU).
        dialog = QProgressDialog(
            f"First start: preparing the default model (once, offline) in\n{cache_folder}", "Hide", 0, 0, window)
        dialog.setWindowTitle(APP_NAME)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)
        models = window.session.models

        def done(what):
            if models.loading_request is None:
                dialog.close()

        models.subscribe(done)
        if models.loading_request is None:  # finished before we subscribed
            dialog.close()
        else:
            dialog.show()
    return exit_after(window, app.exec())


def _pending_conversion(model_spec: str) -> Path | None:
    """The cache folder the default model will be converted into, if it is not converted yet."""
    try:
        from mlx_hooks.gguf_convert import converted_dir_for
        from mlx_hooks.loader import default_model_path, resolve_source

        if resolve_source(model_spec).kind != "default":
            return None
        folder = converted_dir_for(default_model_path())
        return None if (folder / "config.json").is_file() else folder
    except Exception:  # noqa: BLE001 - the window reports load errors itself
        return None


if __name__ == "__main__":
    sys.exit(main())
