"""Seeded mutations of small valid files (a GGUF, a safetensors vector file, an SAE folder's weights
and cfg.json, a preset archive and document, a lab config) must each end in a Symbiont error or
a successful read: never another exception type, never a case past 5 s, in a process whose
address space is capped at 4 GiB. Mutations and replay: tests/fuzz_cases.py.

Fast tier: 40 mutations per target (seeds 0-39); ``slow``: 500 per target (seeds 1000-1499).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_cases import TARGETS

HERE = Path(__file__).parent


def _fuzz(first_seed: int, count: int) -> list[dict]:
    cmd = [sys.executable, str(HERE / "fuzz_cases.py"), *sorted(TARGETS), "--seed", str(first_seed),
           "--count", str(count), "--case-timeout", "5", "--memory-gb", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + count * len(TARGETS), env=os.environ.copy())
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(TARGETS), proc.stdout[-3000:] + proc.stderr[-3000:]
    problems = [f"{r['target']} seed {f['seed']}: {f['problem']} (replay: python tests/fuzz_cases.py {r['target']} "
                f"--seed {f['seed']} --count 1)" for r in reports for f in r["failures"]]
    assert not problems, "\n".join(problems)
    for r in reports:
        assert sum(r["outcomes"].values()) == count, r
        assert r["outcomes"]["refused"] > 0, r  # the mutations do reach the checks
    assert max(r["peak_rss_mib"] for r in reports) < 1024, reports
    return reports


def test_fuzz_fast():
    _fuzz(0, 40)


@pytest.mark.slow
def test_fuzz_thousands():
    reports = _fuzz(1000, 500)
    print({r["target"]: r["outcomes"] for r in reports})
