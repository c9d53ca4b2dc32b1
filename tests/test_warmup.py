"""The edge compiles its signal kernels before the first chunk (``edge.pipeline.warmup``), and no real stream needs
another compiled variant afterwards: MIT-BIH (2 leads, 360 Hz) and LUDB (12 leads, 500 Hz) at 40 ms chunks, as
float32 and float64 and as column slices of a record. Before: the first chunk of the first device compiled ~10 s of
kernels (CI 2026-12-02: the default-port demo's first beats did not come within 10 s) and a Fortran-ordered chunk
compiled the resampler again; CI 2026-12-03: the fused beat kernel compiled again for float64 and column-slice chunks.
The check runs on an empty numba cache: a kernel loaded from the cache does not register the variants of the kernels it
calls, so a warm cache hid the second case on the machine that wrote it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
import numba, numpy as np
from edge.pipeline.warmup import warm_up
from edge.pipeline.device import DeviceStream
from edge import protocol as proto
from offline.records import read_record
import edge.dsp.resample, edge.dsp.filters, edge.dsp.history, edge.detection.qrs, edge.detection.pacing
import edge.detection.beats

def variants():
    return {f"{m.__name__}.{n}": len(f.signatures) for m in (edge.dsp.resample, edge.dsp.filters, edge.dsp.history,
            edge.detection.qrs, edge.detection.pacing, edge.detection.beats) for n, f in vars(m).items()
            if isinstance(f, numba.core.registry.CPUDispatcher)}

warm_up()
before = variants()
for path in sys.argv[1:]:
    rec = read_record(path)
    for dtype in (np.float32, np.float64):
        s = DeviceStream("x")
        step = int(0.04 * rec.fs_hz)
        for k, i in enumerate(range(0, int(8 * rec.fs_hz), step)):
            chunk = rec.signal_mv[i:i + step].astype(dtype)
            s.push(proto.SamplesMessage(k, rec.fs_hz, rec.leads, i / rec.fs_hz, chunk))
        s.flush()
print(json.dumps({"before": before, "after": variants()}))
"""


def test_no_kernel_compiles_after_warm_up(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir / "mitdb" / "100"),
                          str(data_dir / "ludb" / "data" / "72")], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True, env=env)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the kernels called from Python were compiled (or loaded) by the warm-up (those only called from kernels have
    # no variant of their own)
    assert all(got["before"][k] for k in ("edge.dsp.resample._polyphase", "edge.dsp.filters._sosfilt",
                                          "edge.detection.qrs._push", "edge.detection.pacing._column_medians",
                                          "edge.detection.beats._resample_and_scan")), got
    assert got["after"] == got["before"], got
