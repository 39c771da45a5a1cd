"""tools/test.py on checkpoints of the tiny run: --out, --work-dir, --tta."""
import os
import pickle

import pytest
import torch

from tools_helpers import TINY_CONFIG, data_options, load_tool


@pytest.fixture
def test_tool(one_thread):
    return load_tool('tools/test.py')


def predict(test_tool, checkpoint, out, *options, tiny_imagenet, work_dir):
    test_tool.main([
        TINY_CONFIG,
        str(checkpoint), '--out',
        str(out), '--work-dir',
        str(work_dir), *options, '--cfg-options', *data_options(tiny_imagenet)
    ])
    with open(out, 'rb') as f:
        return pickle.load(f)


def scores(predictions):
    return torch.stack([p['pred_score'] for p in predictions])


def test_out_dumps_predictions_of_the_checkpoint(test_tool, trained_work_dir,
                                                 tiny_imagenet, tmp_path):
    work_dir = tmp_path / 'work'
    final = predict(test_tool,
                    trained_work_dir / 'epoch_3.pth',
                    tmp_path / 'final.pkl',
                    tiny_imagenet=tiny_imagenet,
                    work_dir=work_dir)
    # One prediction per val image, in dataset order.
    assert len(final) == 4
    assert [int(p['gt_label']) for p in final] == [0, 0, 1, 1]
    assert [os.path.basename(p['img_path']) for p in final] == [
        'n01440764_0.JPEG', 'n01440764_1.JPEG', 'n01443537_0.JPEG',
        'n01443537_1.JPEG'
    ]
    final_scores = scores(final)
    assert final_scores.shape == (4, 2)
    torch.testing.assert_close(final_scores.sum(1), torch.ones(4))
    assert [int(p['pred_label']) for p in final] == \
        final_scores.argmax(1).tolist()
    # The log and the metrics went to --work-dir.
    (run_dir, ) = [p for p in work_dir.iterdir() if p.is_dir()]
    log = (run_dir / f'{run_dir.name}.log').read_text()
    assert 'accuracy/top1' in log
    assert str(trained_work_dir / 'epoch_3.pth') in log

    # The weights come from the checkpoint: the same file gives the same
    # scores, an earlier one others.
    again = predict(test_tool,
                    trained_work_dir / 'epoch_3.pth',
                    tmp_path / 'again.pkl',
                    tiny_imagenet=tiny_imagenet,
                    work_dir=work_dir)
    torch.testing.assert_close(scores(again), final_scores, rtol=0, atol=0)
    first = predict(test_tool,
                    trained_work_dir / 'epoch_1.pth',
                    tmp_path / 'first.pkl',
                    tiny_imagenet=tiny_imagenet,
                    work_dir=work_dir)
    assert not torch.allclose(scores(first), final_scores)


def test_tta_averages_the_config_augmentations(test_tool, trained_work_dir,
                                               tiny_imagenet, tmp_path):
    checkpoint = trained_work_dir / 'epoch_3.pth'
    work_dir = tmp_path / 'work'
    plain = scores(
        predict(test_tool,
                checkpoint,
                tmp_path / 'plain.pkl',
                tiny_imagenet=tiny_imagenet,
                work_dir=work_dir))
    # The config's tta_pipeline: the image and its mirror image.
    tta = scores(
        predict(test_tool,
                checkpoint,
                tmp_path / 'tta.pkl',
                '--tta',
                tiny_imagenet=tiny_imagenet,
                work_dir=work_dir))
    # The same TTA with the mirror replaced by a second unflipped copy:
    # the mean of two identical scores is the plain score.
    identity = scores(
        predict(test_tool,
                checkpoint,
                tmp_path / 'identity.pkl',
                '--tta',
                '--cfg-options',
                'tta_pipeline.1.transforms.1.1.prob=0.',
                tiny_imagenet=tiny_imagenet,
                work_dir=work_dir))
    torch.testing.assert_close(identity, plain)
    assert tta.shape == plain.shape
    assert not torch.allclose(tta, plain)
    torch.testing.assert_close(tta.sum(1), torch.ones(4))


def test_deploy_gives_the_same_scores(test_tool, trained_work_dir,
                                      tiny_imagenet, tmp_path):
    """--deploy folds the training checkpoint into the deploy form on
    loading; the predictions stay those of the training form."""
    checkpoint = trained_work_dir / 'epoch_3.pth'
    work_dir = tmp_path / 'work'
    plain = scores(
        predict(test_tool, checkpoint, tmp_path / 'plain.pkl',
                tiny_imagenet=tiny_imagenet, work_dir=work_dir))
    deployed = scores(
        predict(test_tool, checkpoint, tmp_path / 'deploy.pkl', '--deploy',
                tiny_imagenet=tiny_imagenet, work_dir=tmp_path / 'deploy'))
    torch.testing.assert_close(deployed, plain, rtol=1e-4, atol=1e-6)
    (run_dir, ) = [p for p in (tmp_path / 'deploy').iterdir() if p.is_dir()]
    log = (run_dir / f'{run_dir.name}.log').read_text()
    assert 'deploy=True' in log


def test_deploy_needs_a_dwnet_backbone(test_tool, trained_work_dir,
                                       tiny_imagenet, tmp_path):
    with pytest.raises(SystemExit, match='--deploy converts a DWNet'):
        predict(test_tool, trained_work_dir / 'epoch_3.pth',
                tmp_path / 'x.pkl', '--deploy', '--cfg-options',
                'model.backbone.type=ResNet', tiny_imagenet=tiny_imagenet,
                work_dir=tmp_path / 'work')
