"""The classification configs by name, in mmpretrain's model index.

``model-index.yml`` (repository root) imports ``configs/cls/metafile.yml``,
which lists every ImageNet config of the project in the OpenMMLab
model-index format. Registered with mmpretrain's ``ModelHub``, the names
work wherever mmpretrain takes a model name::

    import dwnet_mm
    from mmpretrain import ImageClassificationInferencer, get_model
    model = get_model('dwnet-tiny_8xb128_in1k')
    inferencer = ImageClassificationInferencer(
        'dwnet-tiny_8xb128_in1k', pretrained='dwnet-tiny_in1k.pth')

When it happens: ``ModelHub`` lives in ``mmpretrain.apis.model``, whose
import costs seconds (it imports all of mmpretrain's inferencers and
models), and most users of dwnet_mm never need it. So ``import dwnet_mm``
does not import it. :func:`register_on_import` registers the index right
away if that module is already imported, and otherwise puts a one-shot
finder on ``sys.meta_path`` that runs the registration just after the
module's own code, the first time anything imports it, and then removes
itself. :func:`register_model_index` does the same explicitly.

Where the index is: in the checkout (and editable installs) at the
repository root; a built wheel carries it, with the configs, under
``dwnet_mm/.mim/`` (as OpenMMLab packages do; see setup.py).
"""
import importlib.abc
import os.path as osp
import sys
import threading
import warnings

#: The module of mmpretrain that holds ``ModelHub``.
HUB_MODULE = 'mmpretrain.apis.model'
INDEX_FILE = 'model-index.yml'

_lock = threading.RLock()
_state = {'registered': False, 'hook': None}


def model_index_path():
    """The project's ``model-index.yml``, or None where it is absent.

    Returns:
        str | None: ``dwnet_mm/.mim/model-index.yml`` in an installed wheel,
        ``<repository>/model-index.yml`` in the checkout.
    """
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.join(package, '.mim'), osp.dirname(package)):
        path = osp.join(root, INDEX_FILE)
        if osp.isfile(path):
            return path
    return None


def register_model_index():
    """Register the project's model index with mmpretrain's ``ModelHub``.

    Safe to call more than once: later calls do nothing.

    Returns:
        bool: True if this call registered it, False if it already was.

    Raises:
        MissingFrameworkError: If mmpretrain is not installed.
        FileNotFoundError: If the index is not found (an install without
            the configs).
    """
    from .frameworks import require_framework
    require_framework('mmpretrain', 'the model index (models by name)')
    from mmpretrain.apis.model import ModelHub
    return _register(ModelHub)


def _register(model_hub):
    with _lock:
        if _state['registered']:
            return False
        path = model_index_path()
        if path is None:
            raise FileNotFoundError(
                f'{INDEX_FILE} of dwnet_mm not found (neither in the package '
                'nor at the repository root); install dwnet_mm from its '
                'repository (pip install -e .) or a wheel built from it')
        # Config paths in the metafiles are relative to the index's folder.
        model_hub.register_model_index(path, config_prefix=osp.dirname(path))
        _state['registered'] = True
    return True


def register_on_import():
    """Register the index once mmpretrain's ``ModelHub`` is imported.

    Cheap: imports nothing. Called by ``import dwnet_mm``.
    """
    module = sys.modules.get(HUB_MODULE)
    if module is not None and hasattr(module, 'ModelHub'):
        _register_quietly(module)
        return
    with _lock:
        if _state['hook'] is None and not _state['registered']:
            _state['hook'] = _ModelHubImportHook()
            sys.meta_path.insert(0, _state['hook'])


def _register_quietly(module):
    """Register into ``module.ModelHub``; a failure must not break the
    import of mmpretrain, so it becomes a warning."""
    try:
        _register(module.ModelHub)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f'dwnet_mm: could not register its model index with '
                      f'mmpretrain ({type(e).__name__}: {e}); its models are '
                      'not available by name')


def _remove_hook():
    with _lock:
        hook, _state['hook'] = _state['hook'], None
        if hook is not None and hook in sys.meta_path:
            sys.meta_path.remove(hook)


class _ModelHubImportHook(importlib.abc.MetaPathFinder):
    """Finds ``mmpretrain.apis.model`` with the other finders and wraps its
    loader, so that the registration runs after the module's code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != HUB_MODULE:
            return None
        # One shot; also keeps the finders below from calling back here.
        _remove_hook()
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, 'find_spec', None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    """A loader that runs the original one, then registers the index.

    Other attributes (``get_source``, ``get_filename`` ...: tracebacks and
    ``inspect`` use them) are the original loader's.
    """

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_quietly(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
