"""The segmentation configs' multi-scale + flip test pipeline against the
authors' mmseg 0.x MultiScaleFlipAug(img_scale=(2048, 512),
img_ratios=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True) with
Resize(keep_ratio=True), run on an image."""
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image
from recipes import SEG_CONFIGS, load

RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def authors_size(width, height, ratio):
    """mmcv 1.x: the scale (int(2048 r), int(512 r)); keep_ratio rescales by
    min(long edge limit / long edge, short edge limit / short edge) and
    rounds half up."""
    limit = (int(2048 * ratio), int(512 * ratio))
    factor = min(max(limit) / max(width, height),
                 min(limit) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def test_configs_share_the_tta_pipeline():
    first = load(SEG_CONFIGS[0]).tta_pipeline
    for name in SEG_CONFIGS[1:]:
        assert load(name).tta_pipeline == first, name


@pytest.mark.parametrize('width, height', [(683, 512), (300, 1111)])
def test_scales_and_flips(width, height, tmp_path):
    cfg = load(SEG_CONFIGS[0])
    init_default_scope('mmseg')
    from mmseg.registry import TRANSFORMS
    img = np.random.default_rng(0).integers(
        0, 255, (height, width, 3), dtype=np.uint8)
    img[:, :width // 2] = 0  # the left half dark: flips are visible
    Image.fromarray(img).save(tmp_path / 'img.jpg')
    Image.fromarray(np.zeros((height, width), np.uint8)).save(
        tmp_path / 'seg.png')
    results = dict(
        img_path=str(tmp_path / 'img.jpg'),
        seg_map_path=str(tmp_path / 'seg.png'), reduce_zero_label=True,
        seg_fields=[])
    for transform in cfg.tta_pipeline:
        results = TRANSFORMS.build(transform)(results)
    samples = results['data_samples']
    inputs = results['inputs']
    expected = [authors_size(width, height, r) for r in RATIOS]
    # Every ratio unflipped and flipped.
    assert len(inputs) == 2 * len(RATIOS)
    got = [(x.shape[2], x.shape[1]) for x in inputs]
    assert sorted(got) == sorted(expected * 2)
    flipped = [s.metainfo['flip'] for s in samples]
    assert sorted(flipped) == [False] * len(RATIOS) + [True] * len(RATIOS)
    for x, sample in zip(inputs, samples):
        left = x[:, :, :x.shape[2] // 4].float().mean()
        right = x[:, :, -x.shape[2] // 4:].float().mean()
        assert (left > right) == sample.metainfo['flip']
