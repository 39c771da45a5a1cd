"""Optional OpenMMLab frameworks: which extra installs each one, and the
framework a backbone is being built for."""
import importlib
import warnings

FRAMEWORK_EXTRAS = {
    'mmpretrain': 'cls',
    'mmdet': 'det',
    'mmseg': 'seg',
}
# The default_scope of a config names the framework it needs.
SCOPE_FRAMEWORKS = {scope: scope for scope in FRAMEWORK_EXTRAS}
#: Registry scopes whose necks and heads (FPN, UPerHead, ...) take one
#: feature map per stage, as every dense backbone of mmdet/mmseg returns.
DENSE_SCOPES = ('mmdet', 'mmseg')


class MissingFrameworkError(ImportError):
    """An optional framework that a feature needs is not installed."""


def require_framework(name, feature=None):
    """Import an optional framework or fail naming the extra to install.

    Args:
        name (str): 'mmpretrain', 'mmdet' or 'mmseg'.
        feature (str, optional): What needs it, for the message.

    Returns:
        module: The imported framework.
    """
    if name not in FRAMEWORK_EXTRAS:
        raise ValueError(f'unknown framework {name!r}; one of '
                         f'{sorted(FRAMEWORK_EXTRAS)}')
    try:
        return importlib.import_module(name)
    except ImportError as e:
        what = feature or f'this {name} feature'
        package = 'mmsegmentation' if name == 'mmseg' else name
        raise MissingFrameworkError(
            f'{what} needs {package}, which is not installed ({e}); install '
            f"it with: pip install 'dwnet-mm[{FRAMEWORK_EXTRAS[name]}]'"
        ) from e


def available_frameworks():
    """Names of the installed optional frameworks."""
    found = []
    for name in FRAMEWORK_EXTRAS:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        found.append(name)
    return found


def current_scope():
    """The scope name of mmengine's current ``DefaultScope``, or None.

    mmengine's Runner sets it from the config's ``default_scope`` (the
    upstream bases set 'mmdet', 'mmseg' or 'mmpretrain'), so do
    ``init_default_scope``, the frameworks' ``register_all_modules()`` and
    their inferencers; a config dict inherited from a ``pkg::`` base carries
    ``_scope_='pkg'``, which the registry switches to while it builds that
    dict (and everything inside it).
    """
    from mmengine.registry import DefaultScope
    scope = DefaultScope.get_current_instance()
    return None if scope is None else scope.scope_name


def warn_pooled_output_in_dense_scope(out_type, num_stages, name='DWNet'):
    """Warn when a backbone returns pooled vectors while a dense framework
    builds it.

    The defaults do not depend on the scope; this only names the fix for
    the neck's failure that pooled outputs lead to in the 'mmdet' and
    'mmseg' scopes (see :func:`current_scope`), whose necks and heads (FPN,
    UPerHead, ...) take one feature map per stage.

    Args:
        out_type (str): As given to the backbone.
        num_stages (int): Stages of the backbone.
        name (str): Backbone name for the warning.
    """
    scope = current_scope()
    if out_type != 'avg_featmap' or scope not in DENSE_SCOPES:
        return
    warnings.warn(
        f"{name}: out_type='avg_featmap' returns pooled (N, C) vectors, but "
        f"it is built in the {scope!r} scope, whose necks and heads (FPN, "
        f"UPerHead, ...) take one feature map per stage and fail on vectors "
        f"(FPN: AssertionError on len(inputs) == len(in_channels)); leave "
        f"out_type and out_indices out (the defaults: 'featmap' and every "
        f"stage, {tuple(range(num_stages))})", stacklevel=3)
