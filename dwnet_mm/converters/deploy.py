"""DWNet weights in the deploy form (:meth:`DWNet.switch_to_deploy`).

A deployed DWNet folds training-form weights when they are loaded into it
(its ``_load_from_state_dict`` calls :func:`state_dict_for`), so that
``DWNet(deploy=True)`` configs take the training checkpoints; the
reparameterize tool (``tools/model_converters/reparameterize.py``) writes
the folded weights to a file once instead.
"""
import re
from copy import deepcopy

# Block layers that exist in only one of the two forms.
_TRAINING_BLOCK_KEY = re.compile(r'stages\.\d+\.blocks\.\d+\.mixer\.')
_DEPLOY_BLOCK_KEY = re.compile(r'stages\.\d+\.blocks\.\d+\.fc1\.')


def training_form(model, init_cfg=None):
    """A training-form DWNet built like ``model`` (with its
    ``build_kwargs``), on the CPU.

    Args:
        model (DWNet): A DWNet in either form.
        init_cfg (dict, optional): The new model's init_cfg.
            Defaults to None.
    """
    return type(model)(**deepcopy(model.build_kwargs), init_cfg=init_cfg)


def _fold(twin, state_dict):
    """Load ``state_dict`` into the training-form ``twin`` and return the
    deployed state dict."""
    missing = [
        k for k in twin.state_dict()
        if k not in state_dict and not k.endswith('num_batches_tracked')
    ]
    if missing:
        raise RuntimeError(
            'Cannot load a training-form state dict into a deployed DWNet: '
            f'it lacks {len(missing)} backbone tensors (e.g. {missing[:3]}), '
            'which the folded layers need. Load it into a training-form '
            'model (deploy=False) instead and call switch_to_deploy() '
            'afterwards')
    twin.load_state_dict(state_dict, strict=False)
    return twin.switch_to_deploy().state_dict()


def state_dict_for(model, state_dict, prefix=''):
    """``state_dict`` with the backbone's tensors (the keys under
    ``prefix``) in the form of ``model``: training-form tensors folded for
    a deployed model. Other keys pass through.

    Args:
        model (DWNet): The model to load into.
        state_dict (dict): A state dict.
        prefix (str): The backbone's key prefix. Defaults to ''.

    Returns:
        dict: A new state dict (``state_dict`` itself is not changed).

    Raises:
        RuntimeError: For deployed weights given to a training-form model,
            which cannot be unfolded, or incomplete training-form weights
            given to a deployed one.
    """
    names = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    if not model.deploy:
        if any(map(_DEPLOY_BLOCK_KEY.match, names)):
            raise RuntimeError(
                'The state dict is of a deployed DWNet (switch_to_deploy), '
                'which cannot be turned back into the training form; load it '
                'into a model built with deploy=True, or load the original '
                'training checkpoint here')
        return dict(state_dict)
    out = dict(state_dict)
    if not any(map(_TRAINING_BLOCK_KEY.match, names)):
        return out
    twin = training_form(model)
    own = twin.state_dict()
    given = {name: out.pop(prefix + name) for name in names if name in own}
    out.update({prefix + k: v for k, v in _fold(twin, given).items()})
    return out
