"""Thin CLI: `python experiments/maml.py [--quick] [...]` = `paramlab run maml [...]`."""

from paramlab.experiments.maml import main

if __name__ == "__main__":
    main()
