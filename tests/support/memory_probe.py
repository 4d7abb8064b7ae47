"""Load one time-sheet file in a fresh process and report its peak memory, for test_large_files.py.

Run as ``python tests/support/memory_probe.py DB_URL DATA_DIR FILE CHUNK_ROWS``; prints JSON. A separate process
so that ``ru_maxrss`` (the peak resident size since start) measures this load alone; the baseline
is taken after a warm-up load of the master data, so imports and Great Expectations' start-up
do not count.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

db_url, data_dir, big_file, chunk_rows = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
os.environ["INVOICEFLOW_DATA_DIR"] = data_dir

from invoiceflow.airflow import runtime  # noqa: E402
from invoiceflow.core import db  # noqa: E402
from invoiceflow.core.policy import load_policy  # noqa: E402
from invoiceflow.ingest import sources  # noqa: E402

engine = db.engine(db_url)
db.upgrade(engine)
policy = load_policy()
warm_up = sources.load_inbox(runtime.run_for(engine, actor="memory-probe", policy=policy))
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sources.CHUNK_ROWS = chunk_rows
result = sources.load_file(runtime.run_for(engine, actor="memory-probe", policy=policy), "timesheets", big_file)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(
    json.dumps(
        {
            "status": result.status,
            "message": result.message,
            "rows_read": result.rows_read,
            "rows_accepted": result.rows_accepted,
            "file_bytes": big_file.stat().st_size,
            "baseline_kib": baseline,
            "peak_kib": peak,
        }
    )
)
