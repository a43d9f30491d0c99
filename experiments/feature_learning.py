"""Thin CLI: `python experiments/feature_learning.py [--quick] [...]` = `paramlab run feature_learning [...]`."""

from paramlab.experiments.feature_learning import main

if __name__ == "__main__":
    main()
