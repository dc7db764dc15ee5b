"""Where Serve replicas read the model from, whichever node Ray places them on.

A replica on another node cannot read a directory on the head's disk. With
``serve.model_uri`` set, the launcher publishes the model directory there under
its content hash (``<uri>/<hash>/``, the files, then a ``COMPLETE`` manifest of
names and sizes, then ``<uri>/LATEST`` naming the hash) and hands the replicas
that location. A replica given an object-store location (``s3://…``) downloads
it once per node into a local cache (a file lock keeps replicas on one node from
downloading twice; the sizes are checked against the manifest); a plain path is
a directory every node mounts and is read in place. ``<uri>`` alone (no hash)
means the hash in ``LATEST``: what ``infra/serve/s1-32b.yaml`` names.

    where = publish_model("models/s1-32b/sft", "s3://bucket/s1-32b/serve-model")   # on the driver
    local = replica_model(where, "/tmp/s1flow-models")                            # in each replica
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from components.common.storage import url_to_fs

COMPLETE = "COMPLETE"  # written last: its manifest of {file name: size} marks a whole copy
LATEST = "LATEST"      # beside the copies: the hash of the one published last
CHUNK = 8 << 20


def is_object_store(location: str) -> bool:
    """A URL with a scheme other than file:// (s3://, gs://, …): every node reaches it over the network."""
    return "://" in location and not location.startswith("file://")


def model_digest(model_dir: Path) -> str:
    """The content hash of a model directory's files (names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.iterdir() if p.is_file()):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
    return h.hexdigest()[:16]


def publish_model(model_dir: str | Path, uri: str) -> str:
    """Copy ``model_dir`` to ``<uri>/<content hash>`` unless a complete copy is there; the copy's location."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    if not files:
        raise ValueError(f"serve.model_uri: the model directory {model_dir} has no files to publish")
    dest = f"{uri.rstrip('/')}/{model_digest(model_dir)}"
    fs, root = url_to_fs(dest)
    if not fs.exists(f"{root}/{COMPLETE}"):
        fs.makedirs(root, exist_ok=True)
        for f in files:
            fs.put_file(str(f), f"{root}/{f.name}")
        fs.pipe_file(f"{root}/{COMPLETE}", json.dumps({f.name: f.stat().st_size for f in files}).encode())
    fs.pipe_file(f"{url_to_fs(uri)[1].rstrip('/')}/{LATEST}", dest.rsplit("/", 1)[1].encode())
    return dest


def _resolve(location: str) -> tuple[object, str, dict]:
    """The filesystem, the copy's path and its manifest; ``location`` without a hash follows ``LATEST``."""
    fs, root = url_to_fs(location)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/{COMPLETE}") and fs.exists(f"{root}/{LATEST}"):
        root = f"{root}/{fs.cat_file(f'{root}/{LATEST}').decode().strip()}"
    if not fs.exists(f"{root}/{COMPLETE}"):
        raise FileNotFoundError(f"no complete model at {location} (no {COMPLETE} manifest): publish it first "
                                "(the evaluate stage or `s1flow serve` with serve.model_uri set does)")
    return fs, root, json.loads(fs.cat_file(f"{root}/{COMPLETE}"))


def replica_model(location: str, cache_dir: Optional[str] = None) -> str:
    """A local directory holding the model at ``location``: a hub id or a local/shared directory as given, a
    published copy on a shared mount in place, one in an object store downloaded into ``cache_dir`` (once)."""
    if not is_object_store(location):
        path = location.removeprefix("file://")
        if Path(path, COMPLETE).exists() or Path(path, LATEST).exists():
            return _resolve(path)[1]
        return location
    fs, root, manifest = _resolve(location)
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "s1flow-models")
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / root.rsplit("/", 1)[1]
    with open(cache / f".{local.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # replicas on one node: the first downloads, the others wait
        if not (local / COMPLETE).exists():
            part = Path(tempfile.mkdtemp(prefix=f".{local.name}-", dir=cache))
            for name, size in manifest.items():
                fs.get_file(f"{root}/{name}", str(part / name))
                if os.path.getsize(part / name) != size:
                    shutil.rmtree(part)
                    raise OSError(f"{root}/{name}: {os.path.getsize(part / name)} bytes downloaded, the manifest "
                                  f"says {size}")
            (part / COMPLETE).write_text(json.dumps(manifest))
            shutil.rmtree(local, ignore_errors=True)
            part.rename(local)
    return str(local)
