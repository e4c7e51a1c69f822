"""One line of counts in data/summary.txt: each night (a tick), and for each new table.

meow_async sets `scheduled_time` (a tick) or `input_file` (a table) just above this code.
"""

import os
from pathlib import Path

incoming = Path(os.environ["MEOW_BASE"]) / "incoming"
tables = sorted(incoming.glob("*.csv"))
rows = sum(len(t.read_text().splitlines()) for t in tables)
why = globals().get("scheduled_time") or Path(globals()["input_file"]).name
line = f"{why}: {len(tables)} table(s), {rows} row(s) in {incoming}\n"
with (incoming.parent / "summary.txt").open("a") as f:
    f.write(line)
print(line, end="")
