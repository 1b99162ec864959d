"""`symbiont lab ...`: the lab's experiments from the command line.

This module owns the ``lab`` group. A lab experiment adds its own sub-command from its
own module (``lab_<name>.py`` here) with::

    from .lab import lab_subparsers

    def register(subparsers):
        parser = lab_subparsers(subparsers).add_parser("negation", help=...)

:func:`lab_subparsers` makes the group the first time it is asked for and returns the
same one afterwards, so the order in which modules register does not matter.
"""

from __future__ import annotations

_GROUP = "_symbiont_lab_subparsers"


def lab_subparsers(subparsers):
    """The ``lab`` group's sub-parsers on this top-level ``subparsers`` (created on first use)."""
    parser = subparsers.choices.get("lab")
    if parser is None:
        parser = subparsers.add_parser(
            "lab", help="lab experiments: reproduce published results, vary them",
            description="Lab experiments. Each sub-command runs (or resumes) one experiment family.")
        setattr(parser, _GROUP, parser.add_subparsers(dest="lab_command", required=True, metavar="EXPERIMENT"))
    return getattr(parser, _GROUP)


def machine_description() -> str:
    """The "machine" line of a lab report: architecture, cores, MLX version and device."""
    import os
    import platform

    import mlx.core as mx

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, MLX {mx.__version__} on {mx.default_device()}"


def register(subparsers) -> None:
    lab_subparsers(subparsers)
