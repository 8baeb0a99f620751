"""Makes the README's pictures with the project's own commands: a short fit, a real TensorBoard,
and headless Chromium.

    python docs/make_screenshots.py

It runs ``python cli.py fit --config configs/quickstart.yaml`` (3 epochs, a capture every 13 steps)
in a temporary folder, copies the run's own figures and GIF (``docs/tsne_evolution.{png,gif}``,
``dynamics.png``, ``data_map.png``, ``hardest.png``), serves it with ``tensorboard --logdir``, opens
the Projector, selects the latest capture and clicks its bookmark (``projector_bookmark.png``), then
the trajectories entry and its bookmark, coloured by step with each image's path drawn
(``projector_trajectories.png``), and the Images tab (``tensorboard_images.png``), as a user would.
Needs Chromium (Debian package ``chromium``); about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the same browser driver as the browser test

from chromium import Chromium, find_chromium, in_projector  # noqa: E402

COPIED = ("tsne_evolution.png", "tsne_evolution.gif", "dynamics.png", "data_map.png", "hardest.png")
# 3 epochs of 39 steps, a capture every 13: steps 0, 13, ..., 117, ten frames for the GIF and ten steps
# in the trajectories entry. The Projector colours a column of 50 or fewer distinct values by category
# from d3's 10 colours, so ten captures is the most whose steps each get a colour of their own.
EVERY_N_TRAIN_STEPS = 13


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every-n-train-steps", type=int, default=EVERY_N_TRAIN_STEPS,
                        help=f"how often the fit captures (default: {EVERY_N_TRAIN_STEPS})")
    parser.add_argument("--root", type=Path, default=None,
                        help="keep the fit in this folder (default: a temporary one); reused when it has one")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        sys.exit("Expected Chromium on PATH (Debian: apt-get install chromium), but found none.")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lenet-screenshots-") as tmp:
        root = (args.root or Path(tmp)).absolute()
        run_dir = root / "lightning_logs" / "version_0"
        if not (run_dir / "embeddings" / "tsne_evolution.png").is_file():
            root.mkdir(parents=True, exist_ok=True)
            config = REPO / "configs" / "quickstart.yaml"
            subprocess.run([sys.executable, str(REPO / "cli.py"), "fit", "--config", str(config),
                            "--trainer.default_root_dir", str(root), "--trainer.max_epochs", str(args.epochs),
                            "--trainer.enable_progress_bar", "false",
                            "--embeddings.every_n_train_steps", str(args.every_n_train_steps)],
                           cwd=root, check=True)
        missing = [name for name in COPIED if not (run_dir / "embeddings" / name).is_file()]
        if missing:
            sys.exit(f"Expected the run to write {', '.join(f'embeddings/{name}' for name in missing)} in "
                     f"{run_dir}, but it did not; see the fit's output above (or give a fresh --root).")
        for name in COPIED:
            shutil.copyfile(run_dir / "embeddings" / name, args.out / name)
        url, server = serve(root / "lightning_logs", Path(tmp) / "tensorboard.log")
        try:
            with Chromium(chromium, Path(tmp) / "profile", width=1400, height=860) as browser:
                shots = [*shoot_projector(browser, url, run_dir, args.out), shoot_images_tab(browser, url, args.out)]
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"Wrote {', '.join([*COPIED, *(path.name for path in shots)])} in {args.out}")


def serve(logdir: Path, log: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                                   "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(600):
        try:
            opener.open(f"{url}/data/environment", timeout=5).close()
            return url, server
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError(f"TensorBoard did not start:\n{log.read_text()}")


def shoot_projector(browser: Chromium, url: str, run_dir: Path, out: Path) -> list[Path]:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    latest = [e for e in config.embeddings if e.tensor_name.startswith("fc2_step")][-1]
    browser.navigate(f"{url}/#projector")
    browser.wait_for(in_projector("return P && P.dataPanel && P.dataPanel.tensorNames;"), what="the Projector")
    bookmark = shoot_entry(browser, latest.tensor_name, latest.tensor_shape[0], out / "projector_bookmark.png")
    trajectories = next(e for e in config.embeddings if e.tensor_name == "fc2_trajectories")
    browser.navigate(f"{url}/#projector")  # afresh: a switch from another entry leaves its toast on screen
    browser.wait_for(in_projector("return P && P.dataPanel && P.dataPanel.tensorNames;"), what="the Projector")
    # Coloured by step (its bookmark's choice), one line per image through its captures.
    drawn = ("const lines = P.projectorScatterPlotAdapter.polylineVisualizer.polylines;"
             "return P.dataPanel.selectedColorOptionName === 'step' && P.dataSet.sequences.length > 0 && "
             "!!lines && lines.length === P.dataSet.sequences.length;")
    paths = shoot_entry(browser, trajectories.tensor_name, trajectories.tensor_shape[0],
                        out / "projector_trajectories.png", drawn=drawn)
    return [bookmark, paths]


def shoot_entry(browser: Chromium, tensor_name: str, n_points: int, path: Path, drawn: str = "return true;") -> Path:
    """Selects an entry in the open Projector, clicks its bookmark and takes the screenshot once the
    ``drawn`` function body (with ``P``, the projector) returns true."""
    name = json.dumps(tensor_name)
    browser.evaluate(in_projector(f"P.dataPanel.selectedTensor = {name};"))
    # The click waits for the PCA view the Projector starts for every new data set: it resolves
    # asynchronously (vz-projector-projections-panel.ts, showPCA) and would replace the bookmark's view.
    browser.wait_for(in_projector(
        f"return P.dataPanel.selectedTensor === {name} && P.dataSet && P.dataSet.points.length === "
        f"{n_points} && "
        "(P.bookmarkPanel.savedStates || []).length === 1 && "
        "P.projection && P.projection.projectionType === 'pca' && P.projection.dataSet === P.dataSet && "
        "!P.shadowRoot.querySelector('#notification-dialog').opened;"), what=f"{tensor_name} to load")
    click = "P.bookmarkPanel.shadowRoot.querySelector('.state-radio paper-icon-button').click();"
    browser.evaluate(in_projector(click))
    browser.wait_for(in_projector("return P.projection && P.projection.projectionType === 'custom';"),
                     what="the bookmark")
    browser.wait_for(in_projector(drawn), what=f"{tensor_name}'s bookmark to be drawn")
    time.sleep(2)  # sprites, labels and lines are drawn on the next frames
    return browser.screenshot(path)


def shoot_images_tab(browser: Chromium, url: str, out: Path) -> Path:
    browser.navigate(f"{url}/#images")
    # The cards live in shadow roots; wait until three images (map, evolution, class vectors) are drawn.
    loaded_images = """(() => {
      let count = 0;
      const walk = root => root.querySelectorAll('*').forEach(el => {
        if (el.tagName === 'IMG' && el.complete && el.naturalWidth > 100) count++;
        if (el.shadowRoot) walk(el.shadowRoot);
      });
      walk(document);
      return count >= 3;
    })()"""
    browser.wait_for(loaded_images, what="the Images tab")
    time.sleep(1)
    return browser.screenshot(out / "tensorboard_images.png")


if __name__ == "__main__":
    main()
