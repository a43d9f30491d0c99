"""Thin CLI: `python experiments/depth_transfer.py [--quick] [...]` = `paramlab run depth_transfer [...]`."""

from paramlab.experiments.depth_transfer import main

if __name__ == "__main__":
    main()
