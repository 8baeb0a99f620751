"""The README's "Use it in your own project" example, run as written, read from README.md itself."""

import importlib
import re
import subprocess
import sys

import pytest
import yaml
from helpers import CAPTURE_COLUMNS, REPO, read_csv, read_projector
from PIL import Image

SECTION = "## Use it in your own project"


def readme_blocks(language):
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.slow
def test_readme_own_project_example_runs_as_written(tmp_path):
    blocks = readme_blocks("python")
    assert len(blocks) == 2  # RGB images, then a tabular set
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr

    images_run, table_run = tmp_path / "lightning_logs" / "version_0", tmp_path / "lightning_logs" / "version_1"
    entries = read_projector(images_run)
    assert [tag for tag in entries if tag.startswith("net.4_step")] == ["net.4_step0000000", "net.4_step0000020",
                                                                    "net.4_step0000030"]
    features, rows = entries["net.4_step0000030"]
    assert features.shape == (120, 32) and rows[0] == CAPTURE_COLUMNS
    assert entries["net.6.weight_step0000030"][0].shape == (3, 32)
    with Image.open(images_run / "projector" / "sprite_net.4.png") as sprite:
        assert sprite.mode == "RGB"
    rows = read_csv(images_run / "embeddings_net.4" / "separation.csv")
    assert [int(row["step"]) for row in rows] == [0, 20, 30]
    assert float(rows[-1]["probe_acc"]) > 0.9  # the colours are easy

    table = read_projector(table_run)
    assert table["net.0_step0000018"][0].shape == (178, 16)
    assert not list((table_run / "projector").glob("sprite*"))  # tabular rows: no sprite
    assert (table_run / "embeddings_net.0" / "tsne_evolution.png").is_file()


def test_readme_own_project_yaml_entry_builds_the_callback():
    (block,) = readme_blocks("yaml")
    (entry,) = yaml.safe_load(block)["trainer"]["callbacks"]
    module, name = entry["class_path"].rsplit(".", 1)
    callback = getattr(importlib.import_module(module), name)(**entry["init_args"])
    assert callback.state_key == "EmbeddingProjector{'layer': 'fc1'}"
