"""Build a config's DWNet model and load a checkpoint into it, for the
export and model-converter tools."""
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings

from .config import ConfigError, replace_sync_bn
from ..safe_loading import safe_load

# The frameworks whose configs the tools take.
SCOPES = ('mmpretrain', 'mmseg', 'mmdet')


def build_model(cfg, deploy=False):
    """The config's model (a DWNet classifier, detector or segmentor), in
    eval mode, SyncBN as BN, without reading a pretrained file.

    Args:
        cfg (Config): The merged config.
        deploy (bool): Build the backbone's deploy form. Defaults to False.
    """
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ConfigError(
            f'unsupported config: default_scope {scope!r}; the tools take '
            f'mmpretrain, mmseg and mmdet configs (configs/cls, configs/seg, '
            f'configs/det)')
    backbone = cfg.model.get('backbone') or {}
    if not str(backbone.get('type', '')).endswith('DWNet'):
        raise ConfigError(f'unsupported config: the backbone is '
                          f'{backbone.get("type")!r}, not DWNet')
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(scope)
    # The checkpoint brings every weight: no pretrained file is read.
    backbone['init_cfg'] = None
    backbone['deploy'] = deploy
    replace_sync_bn(cfg.model)
    return MODELS.build(cfg.model).eval()


def load_weights(model, checkpoint, trust=None):
    """Load ``checkpoint`` (read by the safe loader) into ``model``; all
    of the model's tensors must be in it.

    Args:
        model (nn.Module): The model.
        checkpoint (str): Its checkpoint file.
        trust (bool): See :func:`dwnet_mm.safe_loading.safe_load`.
            Defaults to False.

    Returns:
        int: Number of the model's tensors.
    """
    state = safe_load(checkpoint, trust=trust)
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'checkpoint {checkpoint!r} holds no state dict')
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    # An exported model with random layers would pass the check against
    # PyTorch: every weight must come from the file.
    missing = [k for k in result.missing_keys
               if not k.endswith('num_batches_tracked')]
    if missing:
        raise ValueError(
            f'checkpoint {checkpoint!r} lacks {len(missing)} of the model\'s '
            f'tensors (e.g. {missing[:3]}); is it for this config?')
    return len(model.state_dict())
