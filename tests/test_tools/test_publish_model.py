"""tools/model_converters/publish_model.py on a real training checkpoint."""
import hashlib
import re
import sys

import pytest
import torch

from tools_helpers import checkpoint, load_tool


@pytest.fixture(scope='module')
def publish_tool():
    return load_tool('tools/model_converters/publish_model.py')


def test_publish_drops_training_state_and_names_by_sha256(
        publish_tool, trained_work_dir, tmp_path, monkeypatch, capsys):
    source = trained_work_dir / 'epoch_3.pth'
    original = checkpoint(source)
    assert {'optimizer', 'message_hub', 'param_schedulers'} <= set(original)

    monkeypatch.setattr(sys, 'argv', [
        'publish_model.py',
        str(source),
        str(tmp_path / 'dwnet_tiny_cls.pth')
    ])
    publish_tool.main()
    published = capsys.readouterr().out.strip()

    match = re.fullmatch(
        re.escape(str(tmp_path)) + r'/dwnet_tiny_cls-([0-9a-f]{8})\.pth',
        published)
    assert match, published
    with open(published, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert match.group(1) == digest[:8]
    # Nothing else is left behind (no temporary file).
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        [f'dwnet_tiny_cls-{digest[:8]}.pth']

    stripped = checkpoint(published)
    assert set(stripped) == {'meta', 'state_dict'}
    assert stripped['meta']['epoch'] == original['meta']['epoch']
    assert stripped['state_dict'].keys() == original['state_dict'].keys()
    for name, tensor in original['state_dict'].items():
        assert torch.equal(stripped['state_dict'][name], tensor), name
    # A published file loads with torch's safe loader.
    torch.load(published, map_location='cpu', weights_only=True)


def test_publish_refuses_non_checkpoints(publish_tool, tmp_path, monkeypatch):
    not_a_model = tmp_path / 'tensors.pth'
    torch.save({'weights': torch.zeros(2)}, not_a_model)
    for source in (not_a_model, tmp_path / 'missing.pth'):
        monkeypatch.setattr(
            sys, 'argv',
            ['publish_model.py',
             str(source),
             str(tmp_path / 'out.pth')])
        with pytest.raises(SystemExit) as info:
            publish_tool.main()
        message = info.value.code
        assert message.startswith('error: ') and str(source) in message
        assert '\n' not in message
    assert not list(tmp_path.glob('out*'))
