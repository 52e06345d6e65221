"""``focusq score``: each input -> its maps, masks and results.tsv row."""
from __future__ import annotations

import sys
from pathlib import Path

from napari_focusq.cli.parser import EXIT_FAILED, EXIT_OK, UsageError, _bar, _check_optics, _err
from napari_focusq.config import ScoreConfig


# ------------------------------------------------------------------------ commands
def _check_model(name: str, modality: str) -> str:
    """Fail early (usage error) on a model that cannot load; return the name for the pipeline.

    The name, not the loaded model, goes to the pipeline so that "default" can pick the
    shipped model of each input's modality (models are cached, so nothing loads twice).
    """
    from napari_focusq.models import load_model

    try:
        load_model(name, modality="brightfield" if modality == "auto" else modality)
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"cannot load model {name!r}: {getattr(exc, 'reason', None) or exc}") from exc
    return name


def cmd_score(args) -> int:
    from napari_focusq.export.outputs import error_reason, score_to_outputs, unique_stem
    from napari_focusq.export.preflight import OutputFolderError, check_output_folder
    from napari_focusq.export.results import append_results

    out = Path(args.out)
    try:  # before the first input: a run must not stop half-way on its output folder
        check_output_folder(out)
    except OutputFolderError as exc:
        raise UsageError(str(exc)) from exc
    _check_model(args.model, args.modality)
    _check_optics(args)
    config = ScoreConfig.from_args(args)
    tsv = out / "results.tsv"
    taken: set = set()
    failed = 0
    for i, path in enumerate(args.inputs, 1):
        stem = unique_stem(path, taken)
        print(f"[{i}/{len(args.inputs)}] {path}", file=sys.stderr, flush=True)
        try:
            row, paths = score_to_outputs(path, out, stem, config, progress=_bar(), results_tsv=tsv)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # MemoryError or a bug on one input: the rest of a long run goes on
            from napari_focusq.export.results import results_row

            row = results_row(None, stem=stem, input_path=path, seconds=0.0, status="error",
                              error=error_reason(exc, path))
            append_results(tsv, row)
        if row["status"] != "ok":
            failed += 1
            _err(f"{path}: {row['error']}")
        else:
            verdict = "pass" if row["pass"] == "yes" else "FAIL"
            print(f"{path}: median {row['median_um'] or '-'} µm, p90 {row['p90_um'] or '-'} µm, "
                  f"excluded {row['excluded_pct'] or '-'}% -> {verdict}  ({out / stem}.*)", flush=True)
    print(f"results: {tsv}" + (f"  ({failed} of {len(args.inputs)} inputs failed)" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK
