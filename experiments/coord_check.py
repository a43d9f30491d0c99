"""Thin CLI: `python experiments/coord_check.py [--quick] [...]` = `paramlab run coord_check [...]`."""

from paramlab.experiments.coord_check import main

if __name__ == "__main__":
    main()
