"""Two processes on localhost, 2 CPU devices each, run a reduction split over j across all 4
devices (and its gradient), joined by jax.distributed with gloo collectives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_reduce_over_j_and_differentiate():
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), port, str(rank)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-4000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert sorted(o["process"] for o in outputs) == [0, 1]
    for record in outputs:
        assert record["lse_error"] < 1e-12, record
        assert record["grad_error"] < 1e-11, record
        assert record["kernel_calls"] >= 2, record  # the LSE and its gradient
        assert record["all_gathers"] == 0, record
        assert record["pairs_per_call"] == [24 * 40 // 4] * record["kernel_calls"], record
