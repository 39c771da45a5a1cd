"""Optional OpenMMLab frameworks: which extra installs each one."""
import importlib

FRAMEWORK_EXTRAS = {
    'mmpretrain': 'cls',
    'mmdet': 'det',
    'mmseg': 'seg',
}
# The default_scope of a config names the framework it needs.
SCOPE_FRAMEWORKS = {scope: scope for scope in FRAMEWORK_EXTRAS}


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
