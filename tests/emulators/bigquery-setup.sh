#!/usr/bin/env bash
# Installs the `local-bigquery` BigQuery emulator (PyPI) and the official google-cloud-bigquery client
# into a venv, for the BigQuery tests. Idempotent. Usage: bigquery-setup.sh VENV_DIR
#
# local-bigquery 0.4.0 declares Python >= 3.13 and duckdb >= 2; it runs on 3.11 after two syntax fixes
# (bigquery_py311.py) and on duckdb 1.5.5, the newest whose ducklake/spatial extensions are on PyPI.
set -euo pipefail
venv=${1:?usage: bigquery-setup.sh VENV_DIR}
here=$(cd "$(dirname "$0")" && pwd)
if [[ -f $venv/.ready-1 ]]; then exit 0; fi
python3 -m venv "$venv"
pip=$venv/bin/pip
$pip install -q --upgrade pip >/dev/null
$pip install -q --ignore-requires-python --no-deps local-bigquery==0.4.0
$pip install -q "duckdb==1.5.5" duckdb-extension-ducklake==1.5.5 duckdb-extension-spatial==1.5.5 \
  "fastapi>=0.139" "fastavro>=1.13.1" "google-cloud-bigquery-storage>=2.41.0" "grpcio>=1.84.1" \
  "mini-racer>=0.12.4" numpy prompt-toolkit pyarrow pydantic-settings pygments "sqlglot>=30.24" "uvicorn>=0.35" \
  "google-cloud-bigquery>=3.40" 2>&1 | grep -v "dependency conflicts\|requires duckdb\|incompatible" || true
py=$venv/bin/python
if $py -c 'import sys; sys.exit(0 if sys.version_info < (3, 13) else 1)'; then $py "$here/bigquery_py311.py"; fi
site=$($py -c 'import site; print(site.getsitepackages()[0])')
ext=$venv/duckdb_ext/v1.5.5/linux_amd64
mkdir -p "$ext"
cp "$site"/duckdb_extension_ducklake/extensions/v1.5.5/*.duckdb_extension "$ext"/
cp "$site"/duckdb_extension_spatial/extensions/v1.5.5/*.duckdb_extension "$ext"/
touch "$venv/.ready-1"
echo "local-bigquery ready in $venv"
