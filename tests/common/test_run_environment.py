"""Where a run's code and numbers came from: the project's commit, library versions, hardware."""
import os
import shutil
import subprocess
from importlib.metadata import version

import pytest

from components.common import run_environment as env
from components.common.run_environment import git_label, git_state, hardware, library_versions
from tests.conftest import REPO


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_the_commit_is_the_checkouts_head():
    state = git_state()  # the checkout holding components/, whatever the working directory
    assert env.PROJECT_ROOT == REPO
    assert state == {"commit": _git("rev-parse", "HEAD"),
                     "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")), "note": None}
    assert git_label(state) == state["commit"] + ("+dirty" if state["dirty"] else "")


def test_no_git_checkout_records_no_commit_and_says_so(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and state["dirty"] is None and "installed copy" in state["note"]
    assert git_label(state) == "unknown"
    if (REPO / ".git").exists():  # an installed copy inside some checkout does not take that checkout's commit
        inner = git_state(REPO / "components")
        assert inner["commit"] is None and str(REPO) in inner["note"]


def test_a_missing_git_is_no_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable on it
    assert git_state() == {"commit": None, "dirty": None, "note": f"git is not installed: the commit of {REPO} "
                                                                  "is unknown"}


def test_library_versions_from_package_metadata_and_none_when_absent(monkeypatch):
    libs = library_versions()
    assert set(libs) == {"torch", "transformers", "vllm", "deepspeed", "ray", "math-verify"}
    assert libs["torch"] == version("torch") and libs["transformers"] == version("transformers")
    monkeypatch.setitem(env.LIBRARIES, "vllm", ("no-such-distribution-s1flow",))
    assert library_versions()["vllm"] is None


def test_hardware_names_the_cpu_and_the_gpus_torch_sees():
    import torch
    hw = hardware()
    assert hw["cpu_count"] == os.cpu_count() and hw["cpu"]
    if torch.cuda.is_available():
        assert hw["gpu_count"] == torch.cuda.device_count() and torch.cuda.get_device_name(0) in hw["gpu"]
        assert hw["cuda"] == torch.version.cuda
    else:
        assert (hw["gpu"], hw["gpu_count"], hw["gpu_driver"], hw["cuda"]) == (None, 0, None, None)


def test_hardware_lists_the_gpus_with_driver_and_cuda(monkeypatch):
    import torch
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: names[i])
    monkeypatch.setattr(env, "gpu_driver", lambda: "550.54.15")
    hw = hardware()
    assert (hw["gpu"], hw["gpu_count"], hw["gpu_driver"]) == ("NVIDIA H100 80GB HBM3", 2, "550.54.15")
    assert hw["cuda"] == torch.version.cuda
