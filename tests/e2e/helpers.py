"""Helpers of the reliability suite: figure recording, a short GAN config, polling.

Each test records its measured figures with `record_figures("R4", {...})`: a JSON file in test-artifacts/ and the
matching block of docs/reliability.md (between `<!-- R4:begin -->` and `<!-- R4:end -->`) are rewritten, so the doc
always shows the last measured run. Longer variants run with SMF_SLOW=1.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.tiny_gan import tiny_dict

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOC = ROOT / "docs" / "reliability.md"
SLOW = os.environ.get("SMF_SLOW") == "1"


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU, {platform.system()} (loadavg {os.getloadavg()[0]:.1f})"


def record_figures(name: str, figures: dict) -> None:
    """Write test-artifacts/reliability-<name>.json and the <name> block of docs/reliability.md."""
    figures = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "variant": "slow (SMF_SLOW=1)" if SLOW else "CI",
        **figures,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"reliability-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    fill_doc({name: figures})


def fill_doc(figures: dict[str, dict] | None = None) -> None:
    """Rewrite the figure blocks of docs/reliability.md (default: from every test-artifacts/reliability-*.json)."""
    if figures is None:
        figures = {
            p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in sorted(ARTIFACTS.glob("reliability-*.json"))
        }
    if not DOC.exists():
        return
    text = DOC.read_text()
    for name, figs in figures.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        block = "\n```json\n" + json.dumps(figs, indent=2) + "\n```\n"
        text = re.sub(
            re.escape(begin) + ".*?" + re.escape(end),
            lambda _, b=begin, e=end, k=block: b + k + e,
            text,
            flags=re.DOTALL,
        )
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def tiny_gan_config(steps=(4, 4, 4, 4), **train) -> dict:
    """The shared tiny GAN recipe with a checkpoint every 8 steps (the kill/resume tests count lost steps)."""
    return tiny_dict(steps, **{"checkpointEvery": 8, **train})


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


if __name__ == "__main__":  # python tests/e2e/helpers.py: refresh the doc from the last measured JSON files
    fill_doc()
