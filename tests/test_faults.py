"""bench/faults.py --short, what CI runs of the fault-injection figures (RELIABILITY.md): one engine
killed and resumed, the numerical faults, a hostile corpus (with kills mid-prep) and the bad-input
table for inference. The run fails when any row misses its criterion."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_fault_injection_short_mode_passes_every_row(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "faults.py"), "--short", "--work", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    assert "**NO**" not in p.stdout
    for section in ("Kill and resume", "Numerical faults", "hostile corpus", "Bad input at inference"):
        assert section in p.stdout
