"""Exit 0 when every package pinned in the lock is installed at its pinned version and aifactory_cli
is importable from this checkout; else list what differs (on stderr) and exit 1.

Used by tests/run to decide whether to run `pip install -c requirements/test.lock -e '.[test]'`.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def main(argv: list[str]) -> int:
    quiet = "--quiet" in argv
    lock = Path(next(a for a in argv if not a.startswith("--")))
    wrong: list[str] = []
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if not m:
            continue
        name, pinned = m.groups()
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        if have != pinned:
            wrong.append(f"{name} {have} (lock: {pinned})")
    try:
        import aifactory_cli
    except ImportError:
        wrong.append("aifactory_cli not importable")
    else:
        here = Path(__file__).resolve().parents[1] / "src"
        if here not in Path(aifactory_cli.__file__).resolve().parents:
            wrong.append(f"aifactory_cli is imported from {aifactory_cli.__file__}, not this checkout")
    if wrong and not quiet:
        print("not as locked in " + str(lock) + ": " + "; ".join(wrong), file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
