"""fsspec filesystems for local paths and object stores (``s3://…``).

Endpoint and credentials come from the environment when the filesystem is made; fsspec's instance cache
keys only on arguments, so a cached instance would keep an earlier endpoint or credentials. Every caller
gets a fresh instance.

    fs, path = url_to_fs("s3://bucket/prefix")
"""
from __future__ import annotations


def url_to_fs(url: str):
    import fsspec
    return fsspec.core.url_to_fs(url, skip_instance_cache=True)
