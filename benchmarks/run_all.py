"""Every benchmark in one run: accuracy (with baselines) then speed. Figures go to stdout
and bench_out/*.json.

    make bench        # or: .venv/bin/python benchmarks/run_all.py

Not here on purpose: bench_frozen.py (the frozen test set is read once per round, at its
end, by hand; DESIGN-NOTES "Evidence").
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_accuracy  # noqa: E402
import bench_speed  # noqa: E402

out = Path("bench_out")
out.mkdir(exist_ok=True)
bench_accuracy.main(["--json", str(out / "accuracy.json")])
print()
bench_speed.main(["--json", str(out / "speed.json")])
