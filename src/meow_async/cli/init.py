"""``meow-async init``: a small workflow that runs as it is, to start from."""

from __future__ import annotations

from pathlib import Path

from ..exceptions import MeowError
from .urls import DOCS_URL

__all__ = ["WORKFLOW", "init_command"]

#: What ``init`` writes: one file rule and its recipe, a comment on every key, and the
#: modeline that gives editors the schema (completion, descriptions, checks as you type).
WORKFLOW = f"""\
# yaml-language-server: $schema={DOCS_URL}workflow.schema.json
# A meow_async workflow: every text file dropped into data/incoming/ runs the recipe `count`.
#   run it:     meow-async run workflow.yaml
#   then:       echo "hello world" > data/incoming/hello.txt
#   see:        meow-async jobs workflow.yaml     (and data/counted/hello.txt)
# Every setting: {DOCS_URL}workflow-file/

runner:
  base_dir: data            # the watched folder, relative to this file
  jobs_dir: .meow/jobs      # one folder per job: its script, parameters, job.json and output

recipes:
  count:                    # a recipe (what a rule runs), by name
    kind: python            # python, bash or notebook
    script: |               # the script; input_file and result are assigned above it
      from pathlib import Path
      words = len(Path(input_file).read_text().split())
      Path(result).parent.mkdir(parents=True, exist_ok=True)
      Path(result).write_text(f"{{words}} words\\n")
      print(words, "words in", input_file)

patterns:
  texts:                    # a pattern (what triggers a rule), by name
    glob: "incoming/*.txt"  # files under base_dir that trigger it; quoted, as * starts YAML aliases
    recipe: count           # the recipe it runs: a pattern and its recipe make a rule
    outputs:                # parameters for each job, {{templates}} filled in from the file
      result: "{{BASE}}/counted/{{PREFIX}}.txt"
"""


def init_command(folder: Path) -> int:
    """Write ``folder/workflow.yaml`` and the folder it watches; never over an existing one."""
    path = folder / "workflow.yaml"
    if path.exists() or path.is_symlink():
        raise MeowError(
            f"{path} exists already: init writes a new workflow and never replaces one "
            "(give another folder: meow-async init NEW_FOLDER)"
        )
    try:
        (folder / "data" / "incoming").mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # x: not even one made meanwhile
            f.write(WORKFLOW)
    except FileExistsError:
        raise MeowError(f"{path} exists already: init never replaces a workflow") from None
    except OSError as e:
        raise MeowError(f"cannot write {path}: {e.strerror or e}") from None
    here = "" if folder == Path() else f"cd {folder} && "
    print(
        f"wrote {path} (one rule: data/incoming/*.txt -> python recipe count)\n"
        f"Run it:  {here}meow-async run workflow.yaml\n"
        'Then:    echo "hello world" > data/incoming/hello.txt   (in another terminal)\n'
        f"Docs:    meow-async docs, or {DOCS_URL}"
    )
    return 0
