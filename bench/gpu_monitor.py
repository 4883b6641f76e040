"""GPU utilisation sampled in the background with `nvidia-smi`, read back per time window.

`nvidia-smi --query-gpu=... -lms N` prints one CSV line per GPU every N ms; the sampler keeps
them with their arrival time (monotonic), so a load level's window gives its mean and peak
utilisation and memory. Without `nvidia-smi` (a CPU machine) it records nothing and each
window says so.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404
import threading
import time
from dataclasses import dataclass, field

__all__ = ["GpuSampler", "gpu_description"]

_QUERY = "utilization.gpu,memory.used"


def _smi(*args: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, *args], capture_output=True, text=True, timeout=20)  # nosec B603
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpu_description() -> dict:
    """The GPU's name, memory and driver as nvidia-smi reports them, the CUDA versions (the
    driver's from nvidia-smi's banner, the runtime torch was built with), and the GPU's compute
    capability with the precision the Classifier picks on it."""
    import torch

    from common.inference import auto_precision

    out = {"nvidia_smi": shutil.which("nvidia-smi") is not None}
    line = _smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    if line:
        name, memory, driver = (part.strip() for part in line.splitlines()[0].split(","))
        out |= {"name": name, "memory": memory, "driver": driver}
    banner = _smi() or ""
    if "CUDA Version:" in banner:
        out["cuda_driver"] = banner.split("CUDA Version:")[1].split()[0]
    out["cuda_torch"] = torch.version.cuda
    out["torch_sees_gpu"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        out["torch_device_name"] = torch.cuda.get_device_name(0)
        out["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        out["served_precision"] = auto_precision("cuda:0")
    return out


@dataclass
class GpuSampler:
    """`with GpuSampler() as gpu: ...; gpu.window(t0, t1)`: utilisation between two
    `time.monotonic()` readings."""

    interval_ms: int = 200
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (t, util %, MiB)
    _process: subprocess.Popen | None = None
    _reader: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        smi = shutil.which("nvidia-smi")
        if smi is not None:
            command = [smi, f"--query-gpu={_QUERY}", "--format=csv,noheader,nounits"]
            self._process = subprocess.Popen(  # nosec B603
                [*command, f"--loop-ms={self.interval_ms}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        if self._process is None or self._process.stdout is None:
            return
        for line in self._process.stdout:
            first_gpu = line.strip().split(",")
            try:
                util, memory = float(first_gpu[0]), float(first_gpu[1])
            except (ValueError, IndexError):
                continue
            self.samples.append((time.monotonic(), util, memory))

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def window(self, start: float, end: float) -> dict:
        """Mean and peak utilisation (%) and peak memory (MiB) of the samples in [start, end]."""
        inside = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not inside:
            reason = "nvidia-smi not found" if not self.available else "no samples in window"
            return {"samples": 0, "util_mean": None, "util_max": None, "mem_max_mib": None,
                    "note": reason}  # fmt: skip
        utils = [u for u, _ in inside]
        return {
            "samples": len(inside),
            "util_mean": round(sum(utils) / len(utils), 1),
            "util_max": max(utils),
            "mem_max_mib": max(m for _, m in inside),
        }
