"""dwnet_mm.utils.complexity_seg on a shrunken segmentor (the full-size
paper table runs with ``python -m dwnet_mm.utils.complexity_seg``)."""
import os.path as osp

import pytest
from seg_test_utils import (NUM_CLASSES, SEG_CONFIG_DIR, SEG_CONFIGS,
                            SMALL_ARCH, SMALL_AUX_CHANNELS, load_seg_config,
                            shrink_model_cfg)

from dwnet_mm.utils.complexity import count_complexity
from dwnet_mm.utils.complexity_seg import (PAPER_SEG_MODELS,
                                           build_segmentor_from_config,
                                           count_segmentor_complexity,
                                           format_table)


@pytest.fixture(scope='module')
def small_segmentor():
    cfg = load_seg_config('upernet_dwnet_tiny_160k_ade20k.py')
    shrink_model_cfg(cfg.model, 'static')
    return build_segmentor_from_config(cfg)


def test_paper_models_point_at_the_configs():
    assert sorted(config for config, _, _ in PAPER_SEG_MODELS.values()) == \
        sorted(SEG_CONFIGS)
    for name, (config, _, _) in PAPER_SEG_MODELS.items():
        arch, conv_type = SEG_CONFIGS[config]
        assert config.split('_160k')[0] == name
        assert name.endswith(arch)
        assert osp.isfile(osp.join(SEG_CONFIG_DIR, config))


def test_parts_and_hand_counts(small_segmentor):
    h, w = 64, 64
    c = count_segmentor_complexity(small_segmentor, (1, 3, h, w))
    params, macs = c['params'], c['macs']
    assert params['total'] == sum(
        p.numel() for p in small_segmentor.parameters())
    assert params['other'] == 0
    assert params['auxiliary_head'] == sum(
        p.numel() for p in small_segmentor.auxiliary_head.parameters())

    # FCN head on stage 3 (stride 16, 4x4): 3x3 conv without bias, eval BN
    # (scale and shift: 2 per element), 1x1 classifier; ReLU is free.
    positions, c_in = (h // 16) * (w // 16), SMALL_ARCH['channels'][2]
    aux = positions * (SMALL_AUX_CHANNELS * c_in * 9 + 2 * SMALL_AUX_CHANNELS
                       + NUM_CLASSES * SMALL_AUX_CHANNELS)
    assert macs['auxiliary_head'] == aux
    # Outside the modules: the bilinear resize of the logits to the input,
    # 4 per output element.
    assert macs['other'] == 4 * NUM_CLASSES * h * w
    # The backbone counts as on its own.
    assert macs['backbone'] == count_complexity(small_segmentor.backbone,
                                                (1, 3, h, w))[1]
    assert macs['encode_decode'] == macs['total'] - macs['auxiliary_head']
    assert macs['encode_decode'] == (
        macs['backbone'] + macs['decode_head'] + macs['other'])


def test_height_and_width_are_interchangeable(small_segmentor):
    """The paper's 2048x512 (H x W) counts as 512x2048."""
    tall = count_segmentor_complexity(small_segmentor, (1, 3, 128, 32))
    wide = count_segmentor_complexity(small_segmentor, (1, 3, 32, 128))
    assert tall['macs'] == wide['macs']


def test_table_format(small_segmentor):
    c = count_segmentor_complexity(small_segmentor, (1, 3, 64, 64))
    text = format_table(
        [dict(name='small', complexity=c, paper_params=1, paper_flops=1)],
        (1, 3, 64, 64))
    assert '| small |' in text and 'input 64x64' in text
