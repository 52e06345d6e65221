"""Focus QC in napari against the headless pipeline, on a 400 Mpx 40x JPEG pyramid.

Writes a 7 x 9 mirrored mosaic of the sample slide (20769 x 19980 px at 0.25 µm/px,
JPEG-tiled pyramidal OME-TIFF), opens it in a napari viewer with this plugin's reader,
docks Focus QC, presses Score and prints the time to the first tiles on screen (the first
canvas draw after the first batch reached the heatmap), the time to done (the final
heatmap shown), and the same file scored headless (``iter_score_slide``: first batch and
done). The CPU the GUI thread used while scoring is printed as its share of the process's.

Run under the virtual display:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gui.py [--slide PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slides import write_pyramid  # noqa: E402


def headless(path: Path, repeats: int) -> dict:
    """Fastest of ``repeats`` runs of the slide pipeline: first batch and done, seconds."""
    from napari_focusq.models import load_model
    from napari_focusq.scoring.pipeline import iter_score_slide

    load_model("default")  # the GUI preloads it too: both sides time scoring, not torch's import
    best = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        gen, first = iter_score_slide(path), None
        try:
            while True:
                ev = next(gen)
                if first is None and ev.stage == "score" and ev.data.get("tiles"):
                    first = time.perf_counter() - t0
        except StopIteration as stop:
            fmap = stop.value
        r = {"first_s": first, "done_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
             "tiles": int(fmap.scored.sum())}
        best = r if best is None or r["done_s"] < best["done_s"] else best
    return best


def gui(path: Path, repeats: int) -> dict:
    """Fastest of ``repeats`` presses of Score in a real viewer (a fresh heatmap each time)."""
    import napari
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    from napari_focusq.models import load_model

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    t0 = time.perf_counter()
    viewer.open(str(path), plugin="napari-focusq")
    _, widget = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    opened = time.perf_counter() - t0
    # A user looks at the slide before pressing Score: let the first views render and the
    # background model preload finish (it is timed: it is what the press would wait for).
    t1 = time.perf_counter()
    load_model("default")
    preload_wait = time.perf_counter() - t1
    _pump(app, 1.0)
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    best = None
    for _ in range(repeats):
        state = {"first": None, "tiles_in": False}

        def on_draw(_event, state=state):
            if state["tiles_in"] and state["first"] is None:
                state["first"] = time.perf_counter()

        def on_event(ev, state=state):
            if ev.stage == "score" and ev.data.get("tiles"):
                state["tiles_in"] = True

        canvas.events.draw.connect(on_draw)
        c0, g0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        widget.score_btn.click()
        worker, job = widget.runner.worker, widget.runner.job
        worker.yielded.connect(on_event)
        # Qt's own event loop until the widget's finished handler has run (connected first,
        # so it runs first): a polling loop here would add its own CPU to the GUI thread's.
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        if widget.busy:
            loop.exec_()
        done = time.perf_counter() - t0
        cpu, gui_cpu = time.process_time() - c0, time.thread_time() - g0
        canvas.events.draw.disconnect(on_draw)
        r = {"first_s": (state["first"] - t0) if state["first"] else None, "done_s": done, "cpu_s": cpu,
             "gui_thread_cpu_s": gui_cpu, "tiles": int(widget.fmap.scored.sum()) if widget.fmap else 0,
             "read_from": widget.fmap.extra.get("read_from") if widget.fmap else None,
             "redraws": job.place.redraw.calls if job.place.redraw is not None else 0}
        if best is None:
            first_press = r  # the session's first Score: one-time costs (imports, first drawings) are in it
        best = r if best is None or r["done_s"] < best["done_s"] else best
        _pump(app, 0.5)
    best.update(open_s=opened, preload_wait_s=preload_wait, first_press=first_press)
    viewer.close()
    return best


def _pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", type=Path, help="score this file instead of writing the mosaic")
    ap.add_argument("--keep", type=Path, help="write the mosaic here (and keep it) instead of a temp folder")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest is printed (default 3)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        path = a.slide
        if path is None:
            path = a.keep or Path(d) / "mosaic-40x.ome.tif"
            t = time.perf_counter()
            shape, px = write_pyramid(path, 7, 9, pixel_size_um=0.25)
            print(f"wrote {path.name}: {shape[1]} x {shape[0]} px at {px} µm/px "
                  f"({shape[0] * shape[1] / 1e6:.0f} Mpx) in {time.perf_counter() - t:.0f} s")
        res = {"headless": headless(path, a.repeats), "gui": gui(path, a.repeats)}
    h, g = res["headless"], res["gui"]
    share = g["gui_thread_cpu_s"] / max(g["cpu_s"], 1e-9)
    print(f"headless iter_score_slide: first batch {h['first_s']:.2f} s, done {h['done_s']:.2f} s "
          f"({h['tiles']} tiles, {h['cpu_s']:.1f} CPU s)")
    print(f"napari Focus QC (read from {g['read_from']}): first tiles on screen {g['first_s']:.2f} s, "
          f"done {g['done_s']:.2f} s = {g['done_s'] / h['done_s']:.2f}x headless ({g['tiles']} tiles, "
          f"{g['cpu_s']:.1f} CPU s; GUI thread {g['gui_thread_cpu_s']:.2f} CPU s = {100 * share:.0f} %, "
          f"{g['redraws']} heatmap redraws)")
    # Scoring is CPU-bound on a small machine: the process's CPU over the cores is a floor
    # under "done", whatever the overlap (software OpenGL's paints are in it too).
    cores = len(os.sched_getaffinity(0))
    print(f"  on {cores} cores the Focus QC run's CPU alone takes >= {g['cpu_s'] / cores:.2f} s = "
          f"{g['cpu_s'] / cores / h['done_s']:.2f}x headless; headless its own: >= {h['cpu_s'] / cores:.2f} s")
    f = g["first_press"]
    print(f"  the session's first press: first tiles {f['first_s']:.2f} s, done {f['done_s']:.2f} s "
          f"(GUI thread {f['gui_thread_cpu_s']:.2f} CPU s)")
    print(f"  (open + dock {g['open_s']:.2f} s; waited {g['preload_wait_s']:.2f} s for the model preload "
          f"before pressing Score; fastest of {a.repeats} runs each, {threading.active_count()} threads)")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
