"""What the tools need around mmengine's Runner: CPU processes, errors.

mmengine 0.10's launchers assume one GPU per process: they call
``torch.cuda.set_device`` and wrap the model in DDP with
``device_ids=[LOCAL_RANK]``, which both fail on a machine without a GPU.
:func:`init_cpu_distributed` starts the process group on gloo first (the
Runner then skips its own start) and :class:`CPUDistributedDataParallel`
is the DDP wrapper for CPU modules. The config side of such a run is
:func:`~.config.adapt_to_cpu_processes`: :mod:`.config` imports this
module, never the reverse.
"""
import contextlib
import datetime
import os
import re
import subprocess
import sys

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` for models on the CPU.

    The Runner passes ``device_ids=[LOCAL_RANK]`` to every DDP wrapper;
    torch accepts device ids only for GPU modules, so they are dropped.

    Args:
        module (nn.Module): The model, on the CPU.
        device_ids (list, optional): Ignored.
        **kwargs: Other arguments of :class:`MMDistributedDataParallel`.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def _slurm_master_addr():
    nodes = os.environ['SLURM_NODELIST']
    hosts = subprocess.run(['scontrol', 'show', 'hostnames', nodes],
                           capture_output=True,
                           text=True,
                           check=True)
    return hosts.stdout.split()[0]


def _set_rank_env(launcher):
    """Fill RANK, WORLD_SIZE, LOCAL_RANK and MASTER_* for env://."""
    if launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
    elif launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = _slurm_master_addr()
    elif launcher != 'pytorch':
        raise ValueError(f'unknown launcher {launcher!r}')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('set MASTER_ADDR to the address of the first node')


def init_cpu_distributed(cfg):
    """Start the gloo process group of a multi-process run without GPU.

    Does nothing for single-process runs, when a GPU is visible (mmengine
    then starts the group itself, on ``env_cfg.dist_cfg``) or when the
    group already runs.

    Args:
        cfg (Config): A config prepared by :func:`prepare_train_config` or
            :func:`prepare_test_config` (``cfg.launcher`` set).

    Returns:
        bool: Whether this call started the process group.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available() or \
            torch_dist.is_initialized():
        return False
    _set_rank_env(launcher)
    kwargs = {}
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(backend='gloo',
                                  init_method='env://',
                                  rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']),
                                  **kwargs)
    return True


_UNKNOWN_TYPE = re.compile(r'^(\S+) is not in the (\S+) registry')


def unknown_type_message(error):
    """One line for mmengine's "X is not in the registry" KeyError.

    Args:
        error (Exception): An exception raised while building from a
            config.

    Returns:
        str | None: The message, or None for any other error.
    """
    if not isinstance(error, KeyError) or not error.args:
        return None
    match = _UNKNOWN_TYPE.match(str(error.args[0]))
    if match is None:
        return None
    name, registry = match.groups()
    return (f'unknown type {name!r} in the config: it is not in the '
            f'{registry} registry; check its spelling, or add the package '
            'that registers it to custom_imports')


@contextlib.contextmanager
def exit_on_unknown_type():
    """Exit with :func:`unknown_type_message` when building from a config
    meets a type no registry knows; other errors pass through."""
    try:
        yield
    except KeyError as e:
        message = unknown_type_message(e)
        if message is None:
            raise
        sys.exit(f'error: {message}')
