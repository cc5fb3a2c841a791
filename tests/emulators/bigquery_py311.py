"""Makes local-bigquery 0.4.0 importable on Python 3.11 (it is written for 3.13): an f-string with a
nested quote, and PEP 695 generic functions. Idempotent. Usage: VENV/bin/python bigquery_py311.py"""
import importlib.util
import pathlib
import re

root = pathlib.Path(importlib.util.find_spec("local_bigquery").submodule_search_locations[0])
results = root / "engine/results.py"
text = results.read_text()
text = text.replace(
    '''        f"THEN error('{message.replace("'", "''")}') ELSE {expression} END"''',
    '''        "THEN error('" + message.replace("'", "''") + f"') ELSE {expression} END"''',
)
results.write_text(text)
metadata = root / "catalog/metadata.py"
text = re.sub(r"def (\w+)\[R: Resource\]\(", r"def \1(", metadata.read_text())
if not text.startswith("from __future__ import annotations"):
    text = "from __future__ import annotations\n" + text
metadata.write_text(text)
print("patched", root)
