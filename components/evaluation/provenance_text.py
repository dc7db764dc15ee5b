"""An evaluation's provenance (``eval.json`` → ``provenance``) as the results page prints it: the full record as
table rows at the top, one line under each section's tables. A field an older file lacks reads "not recorded".

    rows = provenance_rows(ev["provenance"])     # [("protocol", "paper: greedy (temperature 0.0, ..."), ...]
    source_line(ev["provenance"])               # "_Where these numbers come from: commit `3f2a…`, ..._"
"""
from __future__ import annotations

from typing import Any, Optional

NOT_RECORDED = "not recorded"
SHORT = 12  # hex digits of a commit or digest shown on the page (the files hold them whole)


def _short(h: Optional[str]) -> str:
    return f"`{h[:SHORT]}`" if h else NOT_RECORDED


def commit_text(prov: dict, fallback: Optional[str] = None) -> str:
    """The commit, ``(tracked files changed)`` when the tree was dirty, or why there is none."""
    git = prov.get("git")
    if not git:
        return f"`{fallback}`" if fallback else NOT_RECORDED
    if not git.get("commit"):
        return f"none ({git.get('note') or 'no git checkout'})"
    return f"`{git['commit']}`" + (" (tracked files changed)" if git.get("dirty") else "")


def protocol_text(prov: dict) -> str:
    if "temperature" not in prov:
        return NOT_RECORDED
    name = prov.get("protocol") or ("paper" if prov["temperature"] == 0 else "sampled")
    how = "greedy, " if name == "paper" else ""
    text = (f"{name}: {how}temperature {prov['temperature']}, top-p {prov.get('top_p', '?')}, "
            f"seeds {prov.get('seeds', '?')}")
    sampled = prov.get("sampled")
    if sampled:
        k = ", ".join(f"{t} {n}" for t, n in sampled["k"].items())
        text += (f"; and sampled: temperature {sampled['temperature']}, top-p {sampled['top_p']}, k by task "
                 f"({k})")
    return text


def libraries_text(prov: dict) -> str:
    libs = prov.get("libraries")
    if not libs:
        return NOT_RECORDED
    found = ", ".join(f"{k} {v}" for k, v in libs.items() if v)
    absent = ", ".join(k for k, v in libs.items() if not v)
    return found + (f"; not installed: {absent}" if absent else "")


def hardware_text(prov: dict) -> str:
    hw = prov.get("hardware")
    if not hw:
        return NOT_RECORDED
    cpu = f"{hw.get('cpu') or 'CPU'} ({hw.get('cpu_count', '?')} cores)"
    if not hw.get("gpu"):
        return f"{cpu}; no GPU"
    return (f"{cpu}; {hw.get('gpu_count', '?')} x {hw['gpu']}, driver {hw.get('gpu_driver') or '?'}, "
            f"CUDA {hw.get('cuda') or '?'}")


def _dataset(name: str, d: dict) -> str:
    if "revision" in d:
        return f"{name} `{d.get('source')}` @ {_short(d.get('revision')) if d.get('revision') else 'unpinned'}"
    return f"{name} `{d.get('source')}` sha256 {_short(d.get('sha256'))}"


def datasets_text(prov: dict) -> str:
    ds = prov.get("datasets")
    return "; ".join(_dataset(n, d) for n, d in ds.items()) if ds else NOT_RECORDED


def params_text(prov: dict) -> str:
    if not prov.get("params_digest"):
        return NOT_RECORDED
    return f"{_short(prov['params_digest'])} (sha256 of {', '.join(prov.get('params_sections') or ['?'])})"


def provenance_rows(prov: dict) -> list[tuple[str, str]]:
    """The record beyond the engine row: protocol, params, libraries, hardware, datasets."""
    return [("protocol", protocol_text(prov)), ("params digest", params_text(prov)),
            ("libraries", libraries_text(prov)), ("hardware", hardware_text(prov)),
            ("datasets", datasets_text(prov))]


def source_line(prov: Optional[dict[str, Any]], fallback_commit: Optional[str] = None, sampled: bool = False) -> str:
    """One line under a section's tables: commit, params digest, protocol, engine and where it ran (``sampled``:
    under the sampled protocol's tables, its settings)."""
    if not prov:
        return "_Where these numbers come from: not recorded._"
    git = prov.get("git") or {}
    commit = _short(git.get("commit")) + ("+dirty" if git.get("dirty") else "") if git.get("commit") else \
        (f"`{fallback_commit[:SHORT]}`" if fallback_commit and not git else "none")
    hw = prov.get("hardware") or {}
    on = (f"{hw.get('gpu_count')} x {hw['gpu']}" if hw.get("gpu") else f"{hw.get('cpu_count', '?')} CPU cores") \
        if hw else NOT_RECORDED
    name = prov.get("protocol") or NOT_RECORDED
    how = f"{name} protocol (temperature {prov.get('temperature', '?')}, seeds {prov.get('seeds', '?')})"
    if sampled and prov.get("sampled"):
        how = (f"sampled protocol (temperature {prov['sampled']['temperature']}, top-p {prov['sampled']['top_p']}, "
               "k by task)")
    return (f"_Where these numbers come from: commit {commit}, params {_short(prov.get('params_digest'))}, "
            f"{how}, {prov.get('engine', '?')} on {on}; the full record heads the page._")
