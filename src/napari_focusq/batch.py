"""``focusq batch``: many slides on dask.distributed, one task per slide.

The client (this process) is the only writer of the run-wide files: ``results.tsv`` rows
are appended as slides finish, ``error.log`` gets a line per failure and
``manifest.json`` (rewritten atomically) records what is finished, so a rerun skips
slides whose outputs are complete and redoes the rest. Workers write the per-slide
outputs (atomically, see :mod:`napari_focusq.export.outputs`) into the shared output folder.

Each worker loads the model once (a WorkerPlugin) and uses as many torch threads as it
has dask threads. A worker that dies mid-slide (out of memory, killed) has its task
rescheduled elsewhere by the scheduler; a task that raises something unexpected is
retried ``retries`` times; a slide that is simply unreadable is recorded at once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

from distributed import WorkerPlugin

from napari_focusq.config import ScoreConfig
from napari_focusq.errors import BatchUsageError, ConfigError, FocusQError
from napari_focusq.export.run_files import Manifest, append_line, dedupe_results
from napari_focusq.io.inputs import expand_inputs  # noqa: F401  (batch's input specs; imported from here too)
from napari_focusq.progress import Progress, drive

__all__ = ["BatchSummary", "BatchUsageError", "expand_inputs", "iter_batch", "run_batch", "main_batch",
           "MANIFEST_NAME", "ERROR_LOG_NAME"]

MANIFEST_NAME = "manifest.json"
ERROR_LOG_NAME = "error.log"
RUN_NAME = "run.json"
PLUGIN_NAME = "napari-focusq-model"


@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes
    ----------
    n_ok, n_failed, n_skipped
        Slides scored now, slides that failed, slides finished by an earlier run.
    seconds
        Wall time of the run.
    failures
        ``(path, reason)`` per failed slide.
    """

    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    out_dir: Path | None = None
    report: Path | None = None


# ------------------------------------------------------------------------ model
def model_fingerprint(model, modality: str = "auto") -> str:
    """What the manifest records of the model: its label(s) and, for a file, a content hash.

    Loads the model here (in the client) too, so a bad name or file is a usage error
    before any worker starts. Raises :class:`BatchUsageError`.
    """
    from napari_focusq.models import load_model

    mods = ("brightfield", "fluorescence") if modality == "auto" else (modality,)
    labels = []
    for m in mods:
        try:
            labels.append(load_model(model, modality=m).label)
        except (FocusQError, ValueError, OSError, KeyError) as exc:
            if m == mods[0]:
                raise BatchUsageError(f"cannot load model {str(model)!r}: {exc}") from exc
    fp = "|".join(sorted(set(labels)))
    p = Path(str(model)).expanduser()
    if p.is_file():
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        fp += f" sha256:{h.hexdigest()[:16]}"
    return fp


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker and sets torch's threads to the worker's threads."""

    name = PLUGIN_NAME

    def __init__(self, model, modality: str = "auto"):
        self.model = str(model)
        self.modality = modality
        self.models: dict = {}
        self.threads = 1

    def setup(self, worker) -> None:
        import torch

        from napari_focusq.models import load_model

        mods = ("brightfield", "fluorescence") if self.modality == "auto" else (self.modality,)
        for m in mods:
            try:
                self.models[m] = load_model(self.model, modality=m)
            except (FocusQError, ValueError, OSError):
                if m == mods[0]:
                    raise
        self.threads = max(1, int(getattr(worker.state, "nthreads", None) or worker.nthreads or 1))
        # after loading: FocusModel's device choice sets torch threads to every core
        torch.set_num_threads(self.threads)

    def model_for(self, modality: str):
        """The loaded model for ``modality``; for "auto" one object if both are the same,
        else the name (the pipeline then picks per slide, from the per-process cache)."""
        if modality in self.models:
            return self.models[modality]
        distinct = {id(m): m for m in self.models.values()}
        return next(iter(distinct.values())) if len(distinct) == 1 else self.model


def _reset_peak_rss() -> None:
    """Linux: restart this process's peak-RSS count (VmHWM), so that :func:`_peak_rss_mb`
    gives the slide's own peak. Without it the figure was the worker's lifetime peak, and
    on Linux that starts at the parent's size: a spawned process's count keeps the peak of
    the (shared) memory it was forked with across exec, so a worker spawned from a 3 GB
    process reported 3 GB before it had scored a tile."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # not Linux, or not allowed: the lifetime peak it is
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory (MB) since :func:`_reset_peak_rss` (Linux), else in the process's life."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _score_task(path: str, out_dir: str, stem: str, config: ScoreConfig, max_memory_mb: float | None) -> dict:
    """One slide, in a worker: :func:`~napari_focusq.export.outputs.score_to_outputs`, the
    function ``focusq score`` calls, with the worker's loaded model and threads.

    Input problems (:data:`~napari_focusq.errors.INPUT_ERRORS`) come back as an "error" row;
    anything else raises so that dask retries the task.
    """
    import torch

    from napari_focusq.export.outputs import score_to_outputs
    from napari_focusq.io.budget import max_memory_mb as memory_budget

    threads, worker = 1, ""
    try:
        from distributed import get_worker

        w = get_worker()
        worker = w.address
        plugin = w.plugins.get(PLUGIN_NAME)
        if plugin is not None:
            config = dataclasses.replace(config, model=plugin.model_for(config.modality))
            threads = plugin.threads
            torch.set_num_threads(threads)
    except ValueError:  # not in a worker (called directly)
        pass
    result = {"outputs": [], "model_label": "", "worker": worker, "pid": os.getpid()}
    _reset_peak_rss()  # peak_rss_mb: this slide's, what the worker held included
    try:
        st = os.stat(path)
        result.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    except OSError:  # score_to_outputs records why the file cannot be read
        pass
    with memory_budget(max_memory_mb):  # a remote worker has not our environment
        row, paths = score_to_outputs(path, out_dir, stem, config, threads=threads)
    result.update(row=row, outputs=sorted(p.name for p in paths.values()), model_label=row["model"])
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


# ------------------------------------------------------------------- run files
def _assign_stems(paths: list[Path], manifest: Manifest) -> dict[str, str]:
    """Stable stems: a slide keeps the stem of an earlier run; new ones avoid every recorded stem."""
    from napari_focusq.export.outputs import unique_stem

    taken = {e.get("stem") for e in manifest.slides.values() if e.get("stem")}
    stems = {}
    for p in paths:
        e = manifest.slides.get(str(p))
        stems[str(p)] = e["stem"] if e and e.get("stem") else unique_stem(p, taken)
    return stems


# ------------------------------------------------------------------------ cluster
def _open_client(workers: int | None, scheduler: str | None, retries: int):
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        # a scheduler file (dask scheduler --scheduler-file) is handy on HPC, where addresses vary
        is_file = str(scheduler).endswith(".json") and Path(scheduler).is_file()
        try:
            if is_file:
                return Client(scheduler_file=str(scheduler), timeout="20s"), None
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise BatchUsageError(f"cannot connect to the dask scheduler at {scheduler}: {exc}") from exc
    if workers is not None and workers < 1:
        raise BatchUsageError(f"--workers must be at least 1; got {workers}")
    try:
        n = workers or len(os.sched_getaffinity(0))
    except AttributeError:
        n = workers or os.cpu_count() or 1
    # a worker that dies mid-slide counts as one failure of its task; allow `retries` more
    with dask.config.set({"distributed.scheduler.allowed-failures": retries + 1}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


# --------------------------------------------------------------------------- run
def iter_batch(inputs, out_dir, config: ScoreConfig | None = None, *, workers: int | None = None,
               scheduler: str | None = None, retries: int = 2,
               **options) -> Generator[Progress, None, BatchSummary]:
    """Generator form of :func:`run_batch`: yields Progress("batch", done, total) per slide.

    Each event's ``data`` holds ``row`` (the results row), ``skipped`` and, for slides
    scored now, ``peak_rss_mb`` (the worker's peak resident memory while it scored the
    slide, what it already held included; Linux, else its lifetime peak) and ``worker``.
    """
    from napari_focusq.export.outputs import error_reason
    from napari_focusq.export.results import append_results, results_row
    from napari_focusq.review.queue import with_review

    t0 = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths, missing = expand_inputs(inputs)
    if not paths and not missing:
        raise BatchUsageError(f"no inputs matched {' '.join(map(str, inputs))}")
    config = _config(config, options)
    from napari_focusq.export.preflight import OutputFolderError, check_output_folder

    out = Path(out_dir)
    try:  # before the first slide: a run must not stop half-way on its output folder
        check_output_folder(out)
    except OutputFolderError as exc:
        raise BatchUsageError(str(exc)) from exc
    model_fp = model_fingerprint(config.model, config.modality)
    tsv, errlog = out / "results.tsv", out / ERROR_LOG_NAME
    manifest = Manifest(out / MANIFEST_NAME)
    options = config.resume_key()
    from napari_focusq.io.budget import max_memory_bytes

    max_memory_mb = max_memory_bytes() / 1e6
    stems = _assign_stems(paths, manifest)
    summary = BatchSummary(out_dir=out)
    total = len(paths) + len(missing)
    done = 0

    def failed(path, row) -> None:
        summary.n_failed += 1
        summary.failures.append((str(path), row["error"]))
        append_line(errlog, f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{path}\t{row['error']}")

    recorded = {r.get("input") for r in _read_rows(tsv) if r.get("status") == "ok"}
    todo = []
    for p in paths:
        key = str(p)
        if manifest.is_complete(key, model_fp, options, out):
            summary.n_skipped += 1
            done += 1
            if key not in recorded and manifest.slides[key].get("row"):
                append_results(tsv, with_review(manifest.slides[key]["row"], out))  # results.tsv lost/edited
            yield Progress("batch", done, total, f"{p.name}: finished earlier",
                           data={"row": manifest.slides[key].get("row"), "skipped": True})
        else:
            todo.append(p)
    for p in missing:
        why = ("a symbolic link that leads nowhere (broken, or a loop)" if os.path.islink(p)
               else "no such file")
        row = results_row(None, stem=Path(p).name, input_path=p, seconds=0.0, status="error", error=why)
        append_results(tsv, row)
        failed(p, row)
        done += 1
        yield Progress("batch", done, total, f"{p.name}: {why}", data={"row": row, "skipped": False})

    if todo:
        from distributed import as_completed

        client, cluster = _open_client(workers, scheduler, retries)
        futures = {}
        try:
            client.register_plugin(ModelPlugin(config.model, config.modality), name=PLUGIN_NAME)
            # the workers get the model by name (or path) and load it once each (ModelPlugin)
            task_config = dataclasses.replace(config, model=str(config.model))
            for p in todo:
                stem = stems[str(p)]
                fut = client.submit(_score_task, str(p), str(out), stem, task_config, max_memory_mb,
                                    key=f"focusq-{stem}-{uuid.uuid4().hex[:8]}", retries=retries, pure=False)
                futures[fut] = p
            yield Progress("batch", done, total, f"{len(todo)} slides on {len(client.scheduler_info()['workers'])} "
                                                 "workers", data={"skipped": False})
            for fut in as_completed(futures):
                p = futures[fut]
                key, stem = str(p), stems[str(p)]
                try:
                    res = fut.result()
                except Exception as exc:  # KilledWorker after repeated deaths, or a retried bug
                    reason = error_reason(exc, p)
                    if type(exc).__name__ == "KilledWorker":
                        reason = f"the worker scoring it died {retries + 1} times (out of memory or a crash?)"
                    res = {"row": results_row(None, stem=stem, input_path=p, seconds=0.0, status="error",
                                              error=reason), "outputs": []}
                row = with_review(res["row"], out)  # a rescored slide keeps its review
                append_results(tsv, row)
                if row["status"] == "ok":
                    summary.n_ok += 1
                    manifest.slides[key] = {
                        "size": res["size"], "mtime_ns": res["mtime_ns"], "model": model_fp,
                        "model_label": res["model_label"], "stem": stem, "outputs": res["outputs"],
                        "options": options, "status": "ok", "row": row,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
                else:
                    failed(p, row)
                    manifest.slides.pop(key, None)
                manifest.save(force=False)
                done += 1
                yield Progress("batch", done, total, f"{p.name}: {row['status']}",
                               data={"row": row, "skipped": False, "peak_rss_mb": res.get("peak_rss_mb"),
                                     "worker": res.get("worker")})
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            manifest.save()
            client.close()
            if cluster is not None:
                cluster.close()
    manifest.save()
    dedupe_results(tsv)
    summary.seconds = time.perf_counter() - t0
    _write_run(out, summary, model_fp, options, total)
    try:
        from napari_focusq.export.report import write_report

        summary.report = write_report(out)
    except Exception as exc:  # the report is a convenience; the run's results are already safe
        logging.getLogger(__name__).warning("could not write the HTML report: %s", exc)
    return summary


def _read_rows(tsv: Path) -> list[dict]:
    from napari_focusq.export.results import read_results

    return read_results(tsv)


def _write_run(out: Path, s: BatchSummary, model_fp: str, options: dict, total: int) -> None:
    from napari_focusq._atomic import write_text

    write_text(out / RUN_NAME, json.dumps({
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(s.seconds, 2), "inputs": total,
        "ok": s.n_ok, "failed": s.n_failed, "skipped": s.n_skipped, "model": model_fp, "options": options,
    }, indent=1))


def run_batch(inputs, out_dir, config: ScoreConfig | None = None, *, workers: int | None = None,
              scheduler: str | None = None, progress=None, retries: int = 2, **options) -> BatchSummary:
    """Score many slides in parallel on dask.distributed and write their outputs to ``out_dir``.

    Parameters
    ----------
    inputs
        Glob patterns, list files (one path per line, ``#`` comments), folders or paths.
    out_dir
        Output folder (shared by the workers): per-slide outputs, ``results.tsv``,
        ``error.log``, ``manifest.json``, ``report.html``.
    config
        The scoring settings (:class:`~napari_focusq.config.ScoreConfig`), or give them as
        keyword ``options``: ``model`` (a shipped model name or checkpoint path the workers
        can read), ``threshold_um``, ``pixel_size_um``, ``modality``, ``level``, ``slice`` as for
        ``focusq score``, and ``optics``, a dict with any of ``na``, ``immersion``,
        ``wavelength_um`` (``--na``, ``--immersion``, ``--wavelength``; the rest from each file
        or the model).
    workers
        Local worker processes (one thread each); default one per core.
    scheduler
        Address of a running dask scheduler (or its ``--scheduler-file`` JSON) instead of
        a local cluster.
    progress
        Callable receiving Progress events; return False from it to cancel.
    retries
        Extra attempts for a slide whose task crashed or whose worker died.

    Returns
    -------
    BatchSummary
    """
    return drive(iter_batch(inputs, out_dir, config, workers=workers, scheduler=scheduler, retries=retries,
                            **options), progress)


def _config(config: ScoreConfig | None, options: dict) -> ScoreConfig:
    if config is not None and options:
        raise TypeError(f"give the settings in config or as options, not both ({', '.join(options)})")
    try:
        return config if config is not None else ScoreConfig.from_options(**options)
    except ConfigError as exc:
        raise BatchUsageError(str(exc)) from exc


def main_batch(args) -> int:
    """``focusq batch`` with parsed arguments; exit 0 all ok, 1 some failed, 2 bad usage."""
    from napari_focusq.progress import StderrBar

    try:
        s = run_batch(args.inputs, args.out, ScoreConfig.from_args(args),
                      workers=getattr(args, "workers", None), scheduler=getattr(args, "scheduler", None),
                      progress=StderrBar())
    except (BatchUsageError, ConfigError) as exc:
        print(f"focusq: {exc}", file=sys.stderr, flush=True)
        return 2
    for path, reason in s.failures:
        print(f"focusq: {path}: {reason}", file=sys.stderr)
    print(f"{s.n_ok} scored, {s.n_skipped} finished earlier, {s.n_failed} failed in {s.seconds:.1f} s; "
          f"results: {Path(args.out) / 'results.tsv'}" + (f", report: {s.report}" if s.report else ""))
    return 1 if s.n_failed else 0
