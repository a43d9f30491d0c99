"""Thin CLI: `python experiments/lm_lr_transfer.py [--quick] [...]` = `paramlab run lm_lr_transfer [...]`."""

from paramlab.experiments.lm_lr_transfer import main

if __name__ == "__main__":
    main()
