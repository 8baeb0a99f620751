"""``lenet-lightning report RUN_DIR``: (re)builds a run's offline results from its folder alone.

It reads the Projector entries and ``separation.csv`` the run wrote (this project's runs, and runs
of anyone's model made with ``EmbeddingProjector``) and writes, per series, what the end of fit
writes: the t-SNE maps a killed run never made, a complete CSV, the evolution image and GIF, the
dynamics and per-point results, and ``report.html``. No Lightning, no model, no data: only the folder.

    lenet-lightning report lightning_logs/version_0
    python -m lenet_lightning.report lightning_logs/version_0
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from lenet_lightning import projector
from lenet_lightning.results import SeriesResults, series_layers, write_series_results

PROG = "lenet-lightning report"


def build_report(run_dir: str | Path, layers: Sequence[str] | None = None) -> dict[str, SeriesResults]:
    """Writes every series' end-of-series results from ``run_dir``; returns them by layer.

    Raises:
        ValueError: ``run_dir`` is not a run folder with captures (nothing is written then), or
            ``layers`` names one it has none of.
    """
    run_dir = Path(run_dir)
    found = _check_run_dir(run_dir)
    chosen = list(layers) if layers else found
    missing = [layer for layer in chosen if projector.safe_tag(layer) not in found]
    if missing:
        raise ValueError(f"Expected {run_dir} to hold captures of {missing[0]!r}, but it holds captures of "
                         f"{', '.join(found)}; choose one of those with --layer.")
    return {layer: write_series_results(run_dir, layer) for layer in chosen}


def _check_run_dir(run_dir: Path) -> list[str]:
    """The run's series, or a one-line error that says what the folder is instead."""
    if not run_dir.is_dir():
        raise ValueError(f"Expected a run folder, but {str(run_dir)!r} is not a folder; give the folder of a run, "
                         "e.g. lightning_logs/version_0.")
    if not (run_dir / projector.CONFIG_FILENAME).is_file():
        runs = sorted(p.parent for p in run_dir.glob(f"*/{projector.CONFIG_FILENAME}"))
        hint = f" (it holds runs: {', '.join(str(p) for p in runs[:3])})" if runs else ""
        raise ValueError(f"Expected a run folder holding {projector.CONFIG_FILENAME}, but {str(run_dir)!r} has "
                         f"none{hint}; give the folder of a run, e.g. lightning_logs/version_0.")
    layers = series_layers(run_dir)
    if not layers:
        raise ValueError(f"Expected {str(run_dir)!r} to hold EmbeddingProjector captures, but its "
                         f"{projector.CONFIG_FILENAME} lists none; give the folder of a run made with the callback.")
    return layers


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit status (2 for a folder that is not a run, nothing written)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0] + " Writes into the series' plot folder: the plots, "
        "separation.csv, tsne_evolution.png and .gif, the dynamics and per-point results, and report.html.")
    parser.add_argument("run_dir", help="a run folder, e.g. lightning_logs/version_0 (it holds "
                                        f"{projector.CONFIG_FILENAME})")
    parser.add_argument("--layer", action="append", help="only this layer's series (repeatable); default: all")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = build_report(args.run_dir, args.layer)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"warning: {str(warning.message).splitlines()[0]}", file=sys.stderr)
    for layer, result in results.items():
        print(f"{layer}: wrote {len(set(result.files))} files in {_plot_folders(result)}")
        if result.summary:
            print(result.summary)
    return 0


def _plot_folders(result: SeriesResults) -> str:
    folders = sorted({str(path.parent) for path in result.files})
    return ", ".join(folders) if folders else "(none)"


if __name__ == "__main__":
    raise SystemExit(main())
