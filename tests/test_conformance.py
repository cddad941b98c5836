"""The Loki 3.7 conformance suite (../shared/conformance) against a real server: no regressions allowed.

Cases that are not in scope yet are listed in tests/conformance_expected_failures.txt with the issue that
will make them pass. A listed case that passes fails this test too, so the list never hides progress.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED

RUNNER = SHARED / "conformance" / "run.py"
EXPECTED = Path(__file__).with_name("conformance_expected_failures.txt")


def expected_failures() -> dict[str, str]:
    """Return case id → the issue that will fix it."""
    out = {}
    for line in EXPECTED.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            case_id, _, issue = line.partition(" ")
            out[case_id] = issue.strip()
    return out


@pytest.mark.skipif(not RUNNER.exists(), reason="../shared/conformance is not beside the repo")
def test_conformance_suite_has_no_unexpected_failures(make_server) -> None:
    # The data is from 2024, and the runner pushes 11 MB as fast as it can: the default rate limit
    # (4 MB/s, 6 MB burst) would answer 429 to some pushes on a fast machine, and the runner stops there.
    limits = {"reject_old_samples": False, "ingestion_rate_mb": 1000, "ingestion_burst_size_mb": 1000}
    server = make_server({"limits_config": limits})
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--url", server.url, "--push", "--settle", "60"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    print(out[-20000:])
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    assert re.fullmatch(r"\d+ passed, \d+ failed", summary), f"runner did not finish:\n{out[-3000:]}\n{proc.stderr}"
    assert "push failed" not in out, f"the dataset did not load:\n{out[:3000]}"
    failed = set(re.findall(r"^FAIL (\S+) ", out, flags=re.M))
    expected = expected_failures()
    unexpected = sorted(failed - set(expected))
    fixed = sorted(set(expected) - failed)
    assert not unexpected, f"conformance regressions: {unexpected}\n{server.log()[-3000:]}"
    assert not fixed, f"these cases pass now; remove them from {EXPECTED.name}: {fixed}"
