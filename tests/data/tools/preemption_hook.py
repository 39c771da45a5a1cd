"""A hook of the preemption test: hold a run at a known iteration.

The test kills the training process with SIGKILL while it waits here, so
the kill always lands at the same point: after a checkpoint, in the middle
of an epoch.
"""
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class WaitForKillHook(Hook):
    """Before iteration ``at_iter``: write ``ready_file``, then wait.

    Args:
        at_iter (int): Number of finished iterations to stop at.
        ready_file (str): Written (atomically) when the run waits.
        timeout (float): Seconds to wait for the kill before failing.
            Defaults to 300.
    """

    def __init__(self, at_iter, ready_file, timeout=300):
        self.at_iter = at_iter
        self.ready_file = ready_file
        self.timeout = timeout

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.at_iter:
            return
        partial = self.ready_file + '.part'
        with open(partial, 'w') as f:
            f.write(f'{runner.epoch} {runner.iter} {batch_idx}\n')
        os.replace(partial, self.ready_file)
        time.sleep(self.timeout)
        raise RuntimeError(f'not killed within {self.timeout} s')
