"""Thin CLI: `python experiments/lr_transfer.py [--quick] [...]` = `paramlab run lr_transfer [...]`."""

from paramlab.experiments.lr_transfer import main

if __name__ == "__main__":
    main()
