"""Stage 1: count the lines, words and bytes of a text file and write them as JSON.

meow_async sets `input_file` and `result_file` just above this docstring's code (see the job's
script.py and params.json); do not assign them here.
"""

import json
from pathlib import Path

text = Path(input_file).read_bytes()  # noqa: F821 - set by meow_async
counts = {
    "file": Path(input_file).name,  # noqa: F821
    "lines": text.count(b"\n"),
    "words": len(text.split()),
    "bytes": len(text),
}
out = Path(result_file)  # noqa: F821
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(counts) + "\n")
print(f"counted {counts['words']} words in {counts['file']}")
