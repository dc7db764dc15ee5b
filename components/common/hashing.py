"""Stable content hashes (the same in every process: never Python's salted ``hash()``).

    content_hash(Path("data/tiny/s1k.jsonl"))   # DVC's MD5 of a file; ``dir:<md5>`` for a directory
    stable_hash("some text")                     # 64-bit blake2b, for n-gram sets and dedup keys
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that every process (driver, Ray workers) computes alike."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def content_hash(path: Path) -> str:
    if path.is_dir():
        listing = "".join(f"{f.relative_to(path)} {_md5(f)}\n" for f in sorted(path.rglob("*")) if f.is_file())
        return "dir:" + hashlib.md5(listing.encode()).hexdigest()
    return _md5(path)
