"""A local S3 (moto) on 127.0.0.1 for the DVC remote and MLflow artefacts, and the wiring to use it.

Starts ``moto_server``, creates the buckets, and points this checkout's DVC remote
at it in ``.dvc/config.local`` (never committed). Credentials come from the
environment (moto accepts any): export AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

    python infra/s3/local_s3.py --port 5555            # runs until Ctrl-C
    dvc push / dvc pull                                 # then go through it
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BUCKETS = ("s1flow-dvc", "s1flow-mlflow")


def create_buckets(endpoint: str) -> None:
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def point_dvc_at(endpoint: str, project: Path) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "remote", "modify", "--local", "storage", "endpointurl", endpoint],
                   cwd=project, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=5555)
    ap.add_argument("--project", default=".", help="checkout whose DVC remote to point at the local S3")
    a = ap.parse_args()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if not os.environ.get(var):
            sys.exit(f"{var} is not set: export it (any value works with moto; real keys only for real S3)")
    endpoint = f"http://127.0.0.1:{a.port}"
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                               "-p", str(a.port)])
    for _ in range(100):
        try:
            create_buckets(endpoint)
            break
        except Exception:
            time.sleep(0.2)
    point_dvc_at(endpoint, Path(a.project))
    print(f"local S3 at {endpoint}; buckets {', '.join(BUCKETS)}; DVC remote 'storage' points here "
          f"(.dvc/config.local). For MLflow artefacts: export MLFLOW_S3_ENDPOINT_URL={endpoint}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    server.wait()


if __name__ == "__main__":
    main()
