"""The outside check of the BigQuery tests: reads what the host wrote with Google's official
google-cloud-bigquery client, as a user would. Prints JSON on stdout.

  bigquery_verify.py ENDPOINT PROJECT query SQL      -> list of row objects
  bigquery_verify.py ENDPOINT PROJECT schema DATASET.TABLE -> list of {name, type, mode}
  bigquery_verify.py ENDPOINT PROJECT insert DATASET.TABLE '[{"id": ..., "row": {...}}]'
                                                     -> the client's insert errors (insert_rows_json)
"""
import json
import sys

from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import GoogleAPICallError
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery


def main() -> None:
    endpoint, project, command, arg = sys.argv[1:5]
    client = bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )
    if command == "query":
        rows = [dict(row.items()) for row in client.query(arg).result()]
        print(json.dumps(rows, default=str))
    elif command == "schema":
        table = client.get_table(f"{project}.{arg}")
        print(json.dumps([{"name": f.name, "type": f.field_type, "mode": f.mode} for f in table.schema]))
    elif command == "insert":
        rows = json.loads(sys.argv[5])
        try:
            errors = client.insert_rows_json(
                f"{project}.{arg}", [r["row"] for r in rows], row_ids=[r["id"] for r in rows]
            )
        except GoogleAPICallError as e:  # the call failed as a whole, e.g. 404 for a missing table
            errors = {"status": e.code, "message": e.message}
        print(json.dumps(errors))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
