"""Builds the notebooks of docs/notebooks from their `# %%` scripts: `python docs/notebooks/build.py`.

The scripts are the source (CI executes them); the .ipynb files are generated, never edited by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cells(source: str) -> list[dict]:
  """`# %%` / `# %% [markdown]` cells of a script -> notebook cells (markdown lines lose their `# `)."""
  out = []
  for chunk in source.split("# %%")[1:]:
    header, _, body = chunk.partition("\n")
    lines = body.strip("\n").splitlines()
    if "[markdown]" in header:
      text = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
      out.append({"cell_type": "markdown", "metadata": {}, "source": _join(text)})
    else:
      out.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                  "source": _join(lines)})
  return out


def _join(lines: list[str]) -> list[str]:
  return [line + "\n" for line in lines[:-1]] + lines[-1:]


def notebook(script: Path) -> str:
  nb = {"cells": cells(script.read_text()), "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}}}
  return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
  for script in sorted(HERE.glob("*.py")):
    if script.name != "build.py":
      target = script.with_suffix(".ipynb")
      tmp = target.with_suffix(".ipynb.tmp")
      tmp.write_text(notebook(script))
      tmp.replace(target)
      print(f"wrote {target}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
