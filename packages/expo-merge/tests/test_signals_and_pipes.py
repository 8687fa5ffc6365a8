"""The command under real signals and a closed stdout, in a child process: one line on stderr,
nothing left behind, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from expo_helpers import listing

from tensor_utils.checkpoint import save_safetensors

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and POSIX signals")


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "expo_merge.cli", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _big_pair(tmp_path: Path, numel: int = 1 << 24) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)
    sft = {"w": torch.randn(numel, generator=g).bfloat16()}
    aligned = {"w": (sft["w"].float() + 1e-2 * torch.randn(numel, generator=g)).bfloat16()}
    s, a = tmp_path / "sft.safetensors", tmp_path / "aligned.safetensors"
    save_safetensors(sft, s)
    save_safetensors(aligned, a)
    return s, a


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.fail(f"child exited ({proc.returncode}) before the signal: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the child")
        time.sleep(0.005)


def test_sigterm_mid_merge_leaves_nothing_and_prints_one_line(tmp_path):
    s, a = _big_pair(tmp_path)
    before = listing(tmp_path)
    out = tmp_path / "sweep"
    proc = _cli(
        str(s), str(a), "--alpha", "0.1,0.2,0.3", "--dtype", "fp32", "--exact-stats",
        "--threads", "1", "-o", str(out),
    )  # fmt: skip
    # The hidden staging folder exists while the merge runs.
    _wait_for(lambda: any(p.name.startswith(".sweep.") for p in tmp_path.iterdir()), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err == "expo-merge: error: terminated (SIGTERM); no output was written\n"
    assert listing(tmp_path) == before


def test_ctrl_c_during_startup_prints_one_line(tmp_path):
    s, a = _big_pair(tmp_path, numel=64)
    before = listing(tmp_path)
    proc = _cli(str(s), str(a), "--alpha", "0.3", "-o", str(tmp_path / "o.safetensors"))
    maps = Path(f"/proc/{proc.pid}/maps")

    def importing_torch() -> bool:
        try:
            return "torch" in maps.read_text()
        except OSError:
            return False

    _wait_for(importing_torch, proc)  # start-up: torch is being imported
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal arrived (fast machine)")
    assert proc.returncode == 130, err
    assert err == "expo-merge: error: interrupted; no output was written\n"
    assert listing(tmp_path) == before


@pytest.mark.parametrize("as_json", [False, True])
def test_closed_stdout_ends_cleanly(tmp_path, as_json):
    # `expo-merge ... | head -0`: the reader is gone before the report is printed.
    s, a = _big_pair(tmp_path, numel=4096)
    out = tmp_path / "o.safetensors"
    read, write = os.pipe()
    os.close(read)
    args = [str(s), str(a), "--alpha", "0.3", "-o", str(out), *(["--json"] if as_json else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "expo_merge.cli", *args],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
    assert proc.stderr == ""
    assert out.exists()
