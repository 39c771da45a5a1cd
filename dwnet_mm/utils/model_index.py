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

When it happens: only when asked, by :func:`register_model_index`
(``dwnet_mm.register_model_index()``), which imports mmpretrain's
``ModelHub`` (seconds: it imports all of mmpretrain's inferencers and
models). ``import dwnet_mm`` imports none of it and installs no import
hook; the tools that take model names call it themselves.

Where the index is: in the checkout (and editable installs) at the
repository root; a built wheel carries it, with the configs, under
``dwnet_mm/.mim/`` (as OpenMMLab packages do; see setup.py).
"""
import os.path as osp
import threading

INDEX_FILE = 'model-index.yml'

_lock = threading.RLock()
_state = {'registered': False}


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
