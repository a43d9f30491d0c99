"""Thin CLI: `python experiments/kernel_limit.py [--quick] [...]` = `paramlab run kernel_limit [...]`."""

from paramlab.experiments.kernel_limit import main

if __name__ == "__main__":
    main()
