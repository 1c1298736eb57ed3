"""The training loop of one stage (:mod:`~replicator.core.train.trainer`): epoch schedule, optimizer,
micro-steps, checkpoints, periodic evaluation, on one process or several."""
