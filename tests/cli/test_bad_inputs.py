"""Issue 19: every case of the bad-input corpus through ``focusq score`` and ``focusq batch``.

The corpus is written at test time by tests/bad_inputs/make_corpus.py. For each case and
each command: the exit status; a one-line ``focusq: ...`` message that names the file (or
the model / output folder) and the reason; no traceback on stderr; no partial or
temporary file left; and the good input beside the bad one scored.
"""
from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from napari_focusq.cli.app import main
from napari_focusq.export.results import read_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bad_inputs"))
from make_corpus import CASE_NAMES as NAMES  # noqa: E402
from make_corpus import make_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    cases = {c.name: c for c in make_corpus(d)}
    assert tuple(cases) == NAMES  # the parametrisation lists every case the script writes
    return d, cases


@pytest.fixture(scope="module")
def scheduler():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as c, Client(c):
        yield c.scheduler_address




def _out_dir(d: Path, case, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    if case.out:
        src = d / case.out
        if src.is_dir():
            shutil.copytree(src, out)
        else:
            shutil.copy(src, out)
    return out


def _outputs_of(out: Path, stem: str) -> list[str]:
    return sorted(p.name for p in out.glob(f"{stem}.*")) if out.is_dir() else []


@pytest.mark.parametrize("command", ["score", "batch"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name, command, corpus, scheduler, tmp_path, capfd, monkeypatch):
    d, cases = corpus
    case = cases[name]
    if command == "batch" and not case.batch:
        pytest.skip("batch reads a folder argument as a folder of inputs")
    monkeypatch.chdir(d)  # inputs are given as a user types them: relative names
    out = _out_dir(d, case, tmp_path)
    argv = [command, *case.bad, "good.tif", "--out", str(out), *case.options]
    if command == "batch":
        argv += ["--scheduler", scheduler]
    rc = main(argv)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    messages = [ln for ln in err.splitlines() if ln.startswith("focusq: ")]

    if case.expect == "run":
        assert rc == 2, err
        named = case.names.format(dir=d, out=out)
        assert len(messages) == 1 and named in messages[0] and case.reason in messages[0], err
        assert not out.is_dir() or not _outputs_of(out, "good"), "nothing is scored in a refused run"
        return

    rows = {Path(r["input"]).name: r for r in read_results(out / "results.tsv")}
    good = rows["good.tif"]
    assert good["status"] == "ok" and _outputs_of(out, "good"), (err, rows)
    if case.expect == "input":
        assert rc == 1, err
        bad = Path(case.bad[0]).name
        lines = [m for m in messages if bad in m]
        assert len(lines) == 1, err  # one line naming the file ...
        assert case.reason.lower() in lines[0].lower(), lines[0]  # ... and the reason
        assert rows[bad]["status"] == "error" and case.reason.lower() in rows[bad]["error"].lower()
        assert not _outputs_of(out, Path(bad).name.split(".")[0]), "no output for a failed input"
    else:
        assert rc == 0, err
        assert all(r["status"] == "ok" for r in rows.values()), rows
    if case.reason == "nonfinite_px":  # masked, counted in the tile's row, the tile uncertain
        stem = Path(case.bad[0]).name.split(".")[0]
        tiles = list(csv.DictReader(open(out / f"{stem}.tiles.csv")))
        hit = [t for t in tiles if t["nonfinite_px"] not in ("", "0")]
        assert hit and all(t["uncertain"] == "1" for t in hit), tiles
        assert all(t["uncertain"] in ("0", "") for t in tiles if t not in hit)
        assert float(rows[Path(case.bad[0]).name]["uncertain_pct"]) > 0
    if name == "stem_collision":
        stems = {r["stem"] for r in rows.values()} | {r["stem"] for r in read_results(out / "results.tsv")}
        assert len({r["stem"] for r in read_results(out / "results.tsv")}) == 3, stems
    if name == "results_tsv_cut_line":  # the new row starts on its own line, whole
        text = (out / "results.tsv").read_text()
        assert "\t12.5\n" in text, text
        assert good["pass"] == "yes" and good["stem"] == "good"
    # no partial file: every output is whole and no temporary file is left behind
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.mark.parametrize("px_um, refused_by", [(0.25, "tile grid"), (0.05, "overview")])
def test_huge_header_refused_under_a_memory_cap(px_um, refused_by, tmp_path):
    """A 7.6 MB file claiming 10^6 x 10^6 RGB px, scored in a process whose data segment is
    capped (RLIMIT_DATA; RLIMIT_AS would also cap torch's large library mappings): a clear
    refusal naming the file and --max-memory, then the good input scored. Before issue 19
    it hit MemoryError with a traceback (or took ~15 GB and hung without a cap)."""
    import resource
    import subprocess

    from make_corpus import _tif, good_crop, huge_header_tiff

    huge = huge_header_tiff(tmp_path / "huge.tif", px_um=px_um)
    _tif(tmp_path / "good.tif", good_crop())
    cap = 1536 << 20  # 1.5 GiB: several times what scoring the good crop allocates

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    # the timeout guards against a hang; it is not a timing assertion
    r = subprocess.run([sys.executable, "-m", "napari_focusq.cli", "score", str(huge), str(tmp_path / "good.tif"),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       preexec_fn=limit, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith(f"focusq: {huge}:"))
    assert refused_by in line and "--max-memory" in line, line
    rows = {Path(x["input"]).name: x for x in read_results(tmp_path / "out" / "results.tsv")}
    assert rows["good.tif"]["status"] == "ok" and rows["huge.tif"]["status"] == "error"


def test_concurrent_runs_into_one_folder_keep_results_whole(corpus, tmp_path):
    """Two `focusq score` processes appending to one results.tsv: one header, whole rows."""
    import subprocess

    d, _ = corpus
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    procs = [subprocess.Popen([sys.executable, "-m", "napari_focusq.cli", "score", str(d / src), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for src in ("a/slide.tif", "b/slide.tif", "good.tif")]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in results]
    lines = (out / "results.tsv").read_text().splitlines()
    from napari_focusq.export.results import RESULTS_COLUMNS

    assert lines[0].split("\t") == list(RESULTS_COLUMNS) and len(lines) == 4
    assert all(len(ln.split("\t")) == len(RESULTS_COLUMNS) for ln in lines[1:])
    assert all("Traceback" not in e for _, e in results)


def test_batch_workers_keep_the_memory_budget(corpus, scheduler, tmp_path, capfd):
    """--max-memory reaches the workers (a remote worker does not share our environment)."""
    d, _ = corpus
    rc = main(["batch", str(d / "good.tif"), "--out", str(tmp_path / "out"), "--scheduler", scheduler,
               "--max-memory", "1"])
    err = capfd.readouterr().err
    assert rc == 1 and "Traceback" not in err
    (row,) = read_results(tmp_path / "out" / "results.tsv")
    assert row["status"] == "error" and "--max-memory" in row["error"] and "1.0 MB budget" in row["error"]
    assert os.environ.get("FOCUSQ_MAX_MEMORY_MB") is None  # restored after the command
