"""Change a fraction of the benchmark's legacy rows before a "1%" / "0.01%" run.

    uv run python bench/mutate_mysql.py          # 1% of each text table, other rows every run
    uv run python bench/mutate_mysql.py --mutate 0.0001                      # 0.01%
    uv run python bench/mutate_mysql.py --mutate 0.01 --tables typed_plan    # the typed table
    uv run python bench/mutate_mysql.py --mutate 0.05 --delete-fraction 0.001

Text tables (annuity_plan, portfolio_plan, organization; the default): new names, updated_at =
NOW(6), optional inserts/deletes. typed_plan: new plan_name, amount +/- 1, updated_at = NOW(6)
(updates only). Same connection options as bench/gen_mysql.py (--url or
--host/--port/--user/--database).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_mysql import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--mutate", "0.01", *sys.argv[1:]]))
