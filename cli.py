"""Train, validate, test or predict the notebook's LeNet: ``python cli.py fit --config configs/quickstart.yaml``."""

from lenet_lightning.cli import cli_main

if __name__ == "__main__":
    cli_main()
