"""The user's path in a fresh process: `napari` first, then the plugin (a suite that imported
torch before napari's canvas once stayed green while every user's napari crashed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "user_path" / "napari_first.py"


def run_as_a_person(*args: str) -> dict:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a screen: run the suite under xvfb-run (scripts/test.sh does)")
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, f"napari exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_napari_first_then_every_dock_then_segment_the_sample():
    found = run_as_a_person()
    assert found["errors"] == []
    assert not found["matplotlib_at_open"]  # imported for the first epoch, not with the docks
    assert "synthetic lesion prediction" in found["layers"]
    assert found["dice"] > 0.8  # the bundled model finds the sample lesion
    # a click through the worker's click-to-fix network changed the mask at the click
    assert found["click_pixel_is_lesion"] and found["click_changed_pixels"] > 0
    # After all three docks were used, napari's process holds no torch (nor triton, smp).
    assert found["forbidden_modules"] == []


def test_killing_the_worker_mid_training_keeps_napari_and_its_layers(tmp_path):
    found = run_as_a_person("--kill-worker", str(tmp_path / "killed.pt"))
    assert found["after_kill_layers"] == found["layers"]
    assert "model worker was killed" in found["kill_notification"]
    assert found["segmented_after_kill"]  # the next action started a fresh worker
    assert found["forbidden_modules"] == []
