"""What the experiments share (`paramlab.experiments` holds the experiments themselves).

    experiment         `Experiment`: an experiment's sizes, grid and summary, run as a sweep
    command            the command line of an experiment (``paramlab run NAME [options]``)
    checks             option checks the runners share (a bad value is refused before any run)
    summary            `Summary`: the table, figures and verdicts an experiment closes with
    transfer_episodes  few-shot draws, probes and kernel baselines of the transfer and MAML experiments
    lm                 the task, model and protocol of the Transformer-LM experiments
    train_mlp          the built-in sweep runner ``train_mlp``
"""
