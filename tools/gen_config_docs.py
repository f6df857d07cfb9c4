"""Write the configuration key reference of docs/training.md from the config dataclasses.

    python tools/gen_config_docs.py          # rewrite the section between the markers
    python tools/gen_config_docs.py --check  # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from changeagent.engine.config_docs import render_reference, splice

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that docs/training.md is in sync")
    args = parser.parse_args()
    text = DOC.read_text()
    new = splice(text, render_reference())
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python tools/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote the config reference into {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
