from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS


# Root registry: visible from mmpretrain, mmdet and mmseg configs alike.
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise learning-rate decay for any backbone with
    ``get_layer_depth`` (e.g. :class:`DWNet`).

    The learning rate of a parameter at depth ``i`` of ``n`` layers is
    multiplied by ``layer_decay_rate ** (n - 1 - i)``, on top of everything
    :class:`DefaultOptimWrapperConstructor` does with ``paramwise_cfg``
    (``norm_decay_mult``, ``bias_decay_mult``, ``custom_keys``, ...).

    Args:
        optim_wrapper_cfg (dict): Optimizer wrapper config.
        paramwise_cfg (dict, optional): As for
            :class:`DefaultOptimWrapperConstructor`, plus
            ``layer_decay_rate`` (float, default 1.0: no decay).
    """

    def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.layer_decay_rate = paramwise_cfg.pop('layer_decay_rate', 1.0)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params, module, prefix='', is_dcn_module=None):
        if prefix:  # only the top-level call re-scales, once
            return super().add_params(params, module, prefix, is_dcn_module)
        model = module.module if is_model_wrapper(module) else module
        if hasattr(getattr(model, 'backbone', None), 'get_layer_depth'):
            get_depth, depth_prefix = model.backbone.get_layer_depth, \
                'backbone.'
        elif hasattr(model, 'get_layer_depth'):
            get_depth, depth_prefix = model.get_layer_depth, ''
        else:
            raise TypeError(
                f'{type(self).__name__} needs a model whose backbone has '
                f'get_layer_depth() (e.g. DWNet); {type(model).__name__} has '
                'none')
        names = {id(p): n for n, p in model.named_parameters()}
        num_layers = get_depth('', '.')[1]
        first = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        for group in params[first:]:
            name = names[id(group['params'][0])]
            depth, _ = get_depth(name, depth_prefix)
            scale = self.layer_decay_rate**(num_layers - 1 - depth)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['layer_depth'] = depth
        print_log(
            f'layer-wise lr decay {self.layer_decay_rate} over '
            f'{num_layers} layers', 'current')
