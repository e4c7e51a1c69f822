"""Summarise the numbers of one posted measurement (comma-separated) as JSON.

meow_async sets `input_file` (the body), `instrument` (from the route), `query` and `headers`
(from the request) and `summary` (the output path) just above this docstring's code.
"""

import json
from pathlib import Path

text = Path(input_file).read_text()  # noqa: F821
values = [float(v) for v in text.replace("\n", ",").split(",") if v.strip()]
out = Path(summary)  # noqa: F821
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(
    json.dumps(
        {
            "instrument": instrument,  # noqa: F821
            "sample": query.get("sample"),  # noqa: F821
            "operator": headers.get("x-operator"),  # noqa: F821
            "n": len(values),
            "mean": sum(values) / len(values) if values else None,
        }
    )
    + "\n"
)
print(f"{instrument}: {len(values)} values")  # noqa: F821
