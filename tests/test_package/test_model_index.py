"""The classification configs by name, through mmpretrain's own API.

``model-index.yml`` + ``configs/cls/metafile.yml`` are registered with
mmpretrain's ``ModelHub`` by ``dwnet_mm.register_model_index()``;
``get_model``, ``list_models`` and ``ImageClassificationInferencer`` then
take the names. The import-order and missing-mmpretrain cases run in fresh
interpreters; the rest in this one.
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import DefaultScope

import dwnet_mm  # noqa: F401
from dwnet_mm.utils.model_index import model_index_path, register_model_index
from dwnet_mm.safe_loading import checkpoint_loading

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NAME = 'dwnet-tiny_8xb128_in1k'
CONFIG = osp.join(REPO_ROOT, 'configs', 'cls', f'{NAME}.py')

pytest.importorskip('mmpretrain')
register_model_index()


def index_models():
    with open(osp.join(REPO_ROOT, 'configs', 'cls', 'metafile.yml')) as f:
        return {model['Name']: model for model in yaml.safe_load(f)['Models']}


def run_python(code, timeout=180):
    return subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_index_lists_every_imagenet_config():
    configs = sorted(
        osp.splitext(osp.basename(path))[0]
        for path in glob.glob(osp.join(REPO_ROOT, 'configs', 'cls', '*.py'))
        if not osp.basename(path).startswith('demo_'))
    models = index_models()
    assert sorted(models) == configs
    for name, model in models.items():
        assert model['Config'] == f'configs/cls/{name}.py'
        assert 'Weights' not in model  # no mmpretrain-format release
    assert model_index_path() == osp.join(REPO_ROOT, 'model-index.yml')


def test_list_models_and_metainfo():
    from mmpretrain import list_models
    from mmpretrain.apis import ModelHub
    names = list_models('*dwnet*')
    assert sorted(names) == sorted(index_models())
    assert NAME in list_models(task='Image Classification')
    metainfo = ModelHub.get(NAME)
    assert metainfo.config.filename == CONFIG
    assert metainfo.weights is None
    top1 = metainfo.results[0].metrics['Top 1 Accuracy']
    assert top1 == 81.3  # the README's model zoo
    # A second registration is a no-op (mmpretrain would raise on names
    # registered twice).
    assert register_model_index() is False


def _config_model():
    """The classifier of the config file, built without the model hub."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    # As mmengine's Runner does: the top-level normalisation settings.
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def test_get_model_by_name_is_the_config_model():
    from mmpretrain import get_model
    torch.manual_seed(0)
    by_name = get_model(NAME)  # random weights
    torch.manual_seed(1)
    from_config = _config_model()
    n_params = sum(p.numel() for p in by_name.parameters())
    assert n_params == index_models()[NAME]['Metadata']['Parameters']

    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = from_config(x, mode='tensor')
        before = by_name(x, mode='tensor')
        # Same architecture (a strict load checks every name and shape)...
        by_name.load_state_dict(from_config.state_dict(), strict=True)
        after = by_name(x, mode='tensor')
    assert expected.shape == (1, 1000)
    assert not torch.allclose(before, expected)  # a real comparison
    # ...and the same computation.
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_inferencer_by_name_reads_a_local_checkpoint(tmp_path,
                                                     torch_load_calls):
    from mmpretrain.apis import ImageClassificationInferencer
    torch.manual_seed(2)
    model = _config_model()
    classes = tuple(f'class_{i}' for i in range(1000))
    checkpoint = tmp_path / 'dwnet-tiny.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': classes}}}, checkpoint)

    with checkpoint_loading():
        inferencer = ImageClassificationInferencer(
            NAME, pretrained=str(checkpoint), device='cpu')
    # No full pickle.
    assert torch_load_calls and False not in torch_load_calls, \
        torch_load_calls
    assert inferencer.classes == classes
    loaded = inferencer.model.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)

    image = torch.randint(0, 256, (240, 320, 3), dtype=torch.uint8).numpy()
    result = inferencer(image)[0]
    # The test pipeline of the config: resize 256 (short side), crop 224.
    data = inferencer.pipeline({'img': image})
    batch = model.data_preprocessor({
        'inputs': [data['inputs']],
        'data_samples': [data['data_samples']]
    })
    with torch.no_grad():
        scores = model(batch['inputs'], mode='tensor').softmax(-1)[0]
    torch.testing.assert_close(
        torch.as_tensor(result['pred_scores']), scores, rtol=1e-5,
        atol=1e-6)
    assert result['pred_class'] == classes[int(scores.argmax())]


def test_registration_is_explicit():
    """Importing dwnet_mm imports nothing of mmpretrain's model hub and
    hooks nothing; register_model_index() adds the names, whichever of the
    two was imported first."""
    code = '''
import sys
meta_path = list(sys.meta_path)
import dwnet_mm
assert 'mmpretrain.apis' not in sys.modules, 'imported by dwnet_mm'
assert sys.meta_path == meta_path, 'an import hook was installed'
from mmpretrain.apis import list_models
assert 'dwnet-tiny_8xb128_in1k' not in list_models('*dwnet*')
dwnet_mm.register_model_index()
assert 'dwnet-tiny_8xb128_in1k' in list_models('*dwnet*')
print('ok')
'''
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_import_without_mmpretrain():
    code = '''
import sys
sys.modules['mmpretrain'] = None  # as if it were not installed
import dwnet_mm
from dwnet_mm import register_model_index
from dwnet_mm.utils import MissingFrameworkError
try:
    register_model_index()
except MissingFrameworkError as e:
    assert "dwnet-mm[cls]" in str(e), e
    print('refused:', e)
else:
    raise AssertionError('registered without mmpretrain')
'''
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert 'refused:' in result.stdout
