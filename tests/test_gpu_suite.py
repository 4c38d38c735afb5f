"""benchmarks/gpu_suite.py (issue 18's GPU pass) cannot break unseen: its `--dry-run` runs every section on the CPU
at tiny sizes, through the same code paths as on the GPU, and must record results (or a skip reason) for each."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SECTIONS = ("model", "train", "generate", "vqgan", "demo", "big", "precision")


def test_gpu_suite_dry_run_records_every_section(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--profile", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads((tmp_path / "gpu_suite_dry.json").read_text(encoding="utf-8"))
    assert result["dry_run"] is True and result["torch"] and result["gpu"] and result["date"]
    assert set(result["sections"]) == set(SECTIONS)
    for name, record in result["sections"].items():
        assert record["status"] != "error", f"{name}: {record.get('error')}\n{record.get('traceback', '')}"
        assert record.get("results") or record.get("skip_reason"), name
        for label, target in record.get("targets", {}).items():
            assert target["met"] in (True, False, None), label
    assert result["sections"]["precision"]["results"]["resume"]["bitwise_equal"] is True
    table = done.stdout
    assert "section" in table and "targets met:" in table
    assert all(f"\n{name} " in table for name in SECTIONS), table
