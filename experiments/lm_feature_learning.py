"""Thin CLI: `python experiments/lm_feature_learning.py [--quick] [...]` = `paramlab run lm_feature_learning [...]`."""

from paramlab.experiments.lm_feature_learning import main

if __name__ == "__main__":
    main()
