"""Thin CLI: `python experiments/transfer.py [--quick] [...]` = `paramlab run transfer [...]`."""

from paramlab.experiments.transfer import main

if __name__ == "__main__":
    main()
