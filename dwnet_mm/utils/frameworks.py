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


def backbone_output_defaults(out_type, out_indices, num_stages,
                             name='DWNet'):
    """Resolve a backbone's ``out_type``/``out_indices`` left as None.

    In the 'mmdet' and 'mmseg' scopes (see :func:`current_scope`) the
    defaults are ``'featmap'`` and every stage, what FPN and UPerHead
    expect; elsewhere (mmpretrain, no scope) ``'avg_featmap'`` and the last
    stage. An explicit ``'avg_featmap'`` in a dense scope is kept, with a
    warning naming the options that fix the neck's failure it leads to.

    Args:
        out_type (str | None): As given to the backbone.
        out_indices (int | Sequence[int] | None): As given.
        num_stages (int): Stages of the backbone.
        name (str): Backbone name for the warning.

    Returns:
        tuple: ``(out_type, out_indices)``.
    """
    scope = current_scope()
    dense = scope in DENSE_SCOPES
    all_stages = tuple(range(num_stages))
    if out_type is None:
        out_type = 'featmap' if dense else 'avg_featmap'
    elif out_type == 'avg_featmap' and dense:
        warnings.warn(
            f"{name}: out_type='avg_featmap' returns pooled (N, C) vectors, "
            f"but it is built in the {scope!r} scope, whose necks and heads "
            f"(FPN, UPerHead, ...) take one feature map per stage and fail "
            f"on vectors (FPN: AssertionError on len(inputs) == "
            f"len(in_channels)); set out_type='featmap' and "
            f"out_indices={all_stages}, or leave both out (the defaults in "
            f"{scope})", stacklevel=3)
    if out_indices is None:
        out_indices = all_stages if dense else -1
    return out_type, out_indices
