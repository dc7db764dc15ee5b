#!/usr/bin/env bash
# MLflow tracking server: SQLite backend, artefacts on local disk or the S3 remote.
#   infra/mlflow/server.sh                                   # http://127.0.0.1:5000, ./mlartifacts
#   S1FLOW_MLFLOW_ARTIFACTS=s3://s1flow-mlflow/artifacts \
#   MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:5555 infra/mlflow/server.sh   # artefacts on (local) S3
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (or tracking.tracking_uri in params.yaml).
# S3 credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${S1FLOW_BIN:-.venv/bin}"
exec "$BIN/mlflow" server \
  --backend-store-uri "${S1FLOW_MLFLOW_DB:-sqlite:///mlflow-server.db}" \
  --artifacts-destination "${S1FLOW_MLFLOW_ARTIFACTS:-./mlartifacts}" \
  --serve-artifacts \
  --host "${S1FLOW_MLFLOW_HOST:-127.0.0.1}" --port "${S1FLOW_MLFLOW_PORT:-5000}" \
  --workers 1
