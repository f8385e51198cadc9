"""Change ~1% of the benchmark's legacy rows before a "1%" run (new names, updated_at = NOW(6)).

    uv run python bench/mutate_mysql.py          # 1% of each table, other rows every run
    uv run python bench/mutate_mysql.py --mutate 0.05 --delete-fraction 0.001

Same connection options as bench/gen_mysql.py (--url or --host/--port/--user/--database).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_mysql import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--mutate", "0.01", *sys.argv[1:]]))
