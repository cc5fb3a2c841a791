"""Starts local-bigquery offline: DuckDB's connect-time TimeZone setting would autoload the icu
extension from the network, so it is applied after connecting, and extensions load from a local
directory (ducklake + spatial from their PyPI wheels). Usage: VENV/bin/python bigquery_launch.py serve ..."""
import os
import sys

import duckdb

EXT_DIR = os.environ.get("LBQ_EXT_DIR", os.path.join(os.path.dirname(sys.executable), "..", "duckdb_ext"))
_connect = duckdb.connect


def connect(database=":memory:", read_only=False, config=None, **kw):
    config = dict(config or {})
    tz = config.pop("TimeZone", None)
    config.setdefault("extension_directory", EXT_DIR)
    config.setdefault("autoinstall_known_extensions", False)
    con = _connect(database, read_only=read_only, config=config, **kw)
    if tz:
        con.execute(f"SET TimeZone='{tz}'")
    return con


duckdb.connect = connect
from local_bigquery.cli import main  # noqa: E402

sys.exit(main())
