"""Makes the README's pictures with the project's own commands: a short fit, a real TensorBoard,
and headless Chromium.

    python docs/make_screenshots.py    # docs/tsne_evolution.{png,gif}, dynamics.png, data_map.png, projector_*.png

It runs ``python cli.py fit --config configs/quickstart.yaml`` (3 epochs) in a temporary folder,
copies the run's own figures and GIF, serves it with ``tensorboard --logdir``, opens the Projector,
selects the latest capture and clicks its bookmark, then the trajectories entry and its bookmark,
as a user would. Needs Chromium (Debian package ``chromium``); about 3 minutes on 2
CPU cores.
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

COPIED = ("tsne_evolution.png", "tsne_evolution.gif", "dynamics.png", "data_map.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--epochs", type=int, default=3)
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
                            "--trainer.enable_progress_bar", "false", "--embeddings.every_n_train_steps", "10"],
                           cwd=root, check=True)
        for name in COPIED:
            if not (run_dir / "embeddings" / name).is_file():
                sys.exit(f"Expected the run to write embeddings/{name}, but it did not; see its output above.")
            shutil.copyfile(run_dir / "embeddings" / name, args.out / name)
        url, server = serve(root / "lightning_logs", Path(tmp) / "tensorboard.log")
        try:
            with Chromium(chromium, Path(tmp) / "profile", width=1400, height=860) as browser:
                shoot_projector(browser, url, run_dir, args.out)
                shoot_images_tab(browser, url, args.out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"Wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} in {args.out}")


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


def shoot_projector(browser: Chromium, url: str, run_dir: Path, out: Path) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    latest = [e for e in config.embeddings if e.tensor_name.startswith("fc2_step")][-1]
    browser.navigate(f"{url}/#projector")
    browser.wait_for(in_projector("return P && P.dataPanel && P.dataPanel.tensorNames;"), what="the Projector")
    shoot_entry(browser, latest.tensor_name, latest.tensor_shape[0], out / "projector_bookmark.png")
    trajectories = next(e for e in config.embeddings if e.tensor_name == "fc2_trajectories")
    browser.navigate(f"{url}/#projector")  # afresh: a switch from another entry leaves its toast on screen
    browser.wait_for(in_projector("return P && P.dataPanel && P.dataPanel.tensorNames;"), what="the Projector")
    shoot_entry(browser, trajectories.tensor_name, trajectories.tensor_shape[0], out / "projector_trajectories.png")


def shoot_entry(browser: Chromium, tensor_name: str, n_points: int, path: Path) -> None:
    """Selects an entry in the open Projector, clicks its bookmark and takes the screenshot."""
    name = json.dumps(tensor_name)
    browser.evaluate(in_projector(f"P.dataPanel.selectedTensor = {name};"))
    browser.wait_for(in_projector(
        f"return P.dataPanel.selectedTensor === {name} && P.dataSet && P.dataSet.points.length === "
        f"{n_points} && "
        "(P.bookmarkPanel.savedStates || []).length === 1 && "
        "!P.shadowRoot.querySelector('#notification-dialog').opened;"), what=f"{tensor_name} to load")
    click = "P.bookmarkPanel.shadowRoot.querySelector('.state-radio paper-icon-button').click();"
    browser.evaluate(in_projector(click))
    browser.wait_for(in_projector("return P.projection && P.projection.projectionType === 'custom';"),
                     what="the bookmark")
    time.sleep(2)  # sprites, labels and lines are drawn on the next frames
    browser.screenshot(path)


def shoot_images_tab(browser: Chromium, url: str, out: Path) -> None:
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
    browser.screenshot(out / "tensorboard_images.png")


if __name__ == "__main__":
    main()
