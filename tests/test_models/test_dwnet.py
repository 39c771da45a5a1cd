from copy import deepcopy
from unittest import TestCase

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.models import DWNet
from dwnet_mm.models.layers import DWNetBlock

# A small architecture keeps CPU tests fast.
SMALL = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])


def small(**kwargs):
    kwargs.setdefault('arch', deepcopy(SMALL))
    return DWNet(**kwargs)


class TestDWNetArch(TestCase):

    def test_named_archs(self):
        for name, width, depths in [('tiny', 96, [2, 2, 6, 2]),
                                    ('t', 96, [2, 2, 6, 2]),
                                    ('base', 128, [2, 2, 18, 2]),
                                    ('b', 128, [2, 2, 18, 2])]:
            model = DWNet(arch=name)
            self.assertEqual(model.arch['depths'], depths)
            self.assertEqual(model.patch_embed.projection.out_channels, width)
            self.assertEqual(
                [len(s.blocks) for s in model.stages], depths)

    def test_unknown_arch_lists_valid_names(self):
        with self.assertRaisesRegex(ValueError, r"'base'.*'tiny'"):
            DWNet(arch='huge')
        with self.assertRaisesRegex(ValueError, 'channels'):
            DWNet(arch=dict(depths=[1, 1, 1, 1]))
        with self.assertRaisesRegex(ValueError, 'same length'):
            DWNet(arch=dict(channels=[8, 16], depths=[1, 1, 1]))

    def test_bad_options(self):
        with self.assertRaisesRegex(ValueError, 'conv_type'):
            small(conv_type='attention')
        with self.assertRaisesRegex(ValueError, 'out_type'):
            small(out_type='raw')
        with self.assertRaisesRegex(ValueError, 'out of range'):
            small(out_indices=(4, ))

    def test_custom_arch(self):
        model = small()  # every stage's map by default
        self.assertEqual(model.out_channels, [32, 64, 128, 256])
        x = torch.randn(2, 3, 64, 64)
        self.assertEqual([o.shape for o in model(x)],
                         [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4),
                          (2, 256, 2, 2)])


class TestDWNetForward(TestCase):

    def test_classification_output(self):
        for conv_type in ('static', 'dynamic', 'i_dynamic'):
            model = small(conv_type=conv_type, out_type='avg_featmap',
                          out_indices=-1).eval()
            out = model(torch.randn(2, 3, 64, 64))
            self.assertEqual(len(out), 1)
            self.assertEqual(out[0].shape, (2, 256))
            self.assertIsInstance(model.norm3, nn.LayerNorm)

    def test_dense_output(self):
        model = small(out_type='featmap', out_indices=(0, 1, 2, 3)).eval()
        outs = model(torch.randn(1, 3, 64, 96))
        self.assertEqual([tuple(o.shape) for o in outs],
                         [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6),
                          (1, 256, 2, 3)])
        for i in range(4):
            self.assertIsInstance(getattr(model, f'norm{i}'), _BatchNorm)

    def test_negative_out_indices(self):
        model = small(out_type='featmap', out_indices=(-1, -3)).eval()
        self.assertEqual(model.out_indices, (1, 3))
        outs = model(torch.randn(1, 3, 64, 64))
        self.assertEqual([o.shape[1] for o in outs], [64, 256])
        self.assertFalse(hasattr(model, 'norm0'))

    def test_any_input_size(self):
        for conv_type in ('static', 'dynamic', 'i_dynamic'):
            model = small(conv_type=conv_type, out_type='featmap',
                          out_indices=(0, 1, 2, 3)).eval()
            outs = model(torch.randn(1, 3, 97, 131))
            # ceil(97 / 4) = 25, ceil(131 / 4) = 33, then ceil halving.
            self.assertEqual([tuple(o.shape[-2:]) for o in outs],
                             [(25, 33), (13, 17), (7, 9), (4, 5)])
            for o in outs:
                self.assertTrue(torch.isfinite(o).all())

    def test_large_detection_input(self):
        model = DWNet(arch='tiny', out_type='featmap',
                      out_indices=(0, 1, 2, 3)).eval()
        with torch.no_grad():
            outs = model(torch.randn(2, 3, 800, 1216))
        self.assertEqual([tuple(o.shape) for o in outs],
                         [(2, 96, 200, 304), (2, 192, 100, 152),
                          (2, 384, 50, 76), (2, 768, 25, 38)])

    def test_input_errors(self):
        model = small()
        with self.assertRaisesRegex(ValueError, r'4-D.*unsqueeze'):
            model(torch.randn(3, 64, 64))
        with self.assertRaisesRegex(ValueError, r'3 input channels.*got 1'):
            model(torch.randn(1, 1, 64, 64))
        model = small(in_channels=1, out_indices=-1)
        self.assertEqual(model(torch.randn(2, 1, 32, 32))[0].shape,
                         (2, 256, 1, 1))

    def test_backward(self):
        for conv_type in ('static', 'dynamic', 'i_dynamic'):
            model = small(conv_type=conv_type, out_type='featmap',
                          out_indices=(0, 1, 2, 3))
            outs = model(torch.randn(2, 3, 40, 56))
            sum(o.square().mean() for o in outs).backward()
            for name, param in model.named_parameters():
                self.assertIsNotNone(param.grad, name)
                self.assertTrue(torch.isfinite(param.grad).all(), name)


class TestDWNetOptions(TestCase):

    def test_drop_path_rates(self):
        model = small(drop_path_rate=0.4)
        rates = [
            getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
            for b in s.blocks
        ]
        self.assertEqual(len(rates), 5)
        self.assertAlmostEqual(rates[0], 0.)
        self.assertAlmostEqual(rates[-1], 0.4)
        self.assertAlmostEqual(rates[2], 0.2)

    def test_frozen_stages(self):
        model = small(out_type='featmap', out_indices=(0, 1, 2, 3),
                      frozen_stages=2)
        model.train()
        frozen = [model.patch_embed, model.stages[0], model.stages[1],
                  model.norm0, model.norm1]
        for module in frozen:
            self.assertFalse(module.training)
            for p in module.parameters():
                self.assertFalse(p.requires_grad)
        for module in (model.stages[2], model.stages[3], model.norm2):
            self.assertTrue(module.training)
            for p in module.parameters():
                self.assertTrue(p.requires_grad)
        stem_only = small(frozen_stages=0).train()
        self.assertFalse(stem_only.patch_embed.projection.weight.requires_grad)
        self.assertTrue(all(p.requires_grad
                            for p in stem_only.stages.parameters()))

    def test_norm_eval(self):
        model = small(norm_eval=True).train()
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        self.assertTrue(bns)
        self.assertTrue(all(not m.training for m in bns))
        self.assertTrue(model.stages[0].blocks[0].mlp.training)

    def test_with_cp_matches(self):
        torch.manual_seed(0)
        ref = small(out_type='featmap', out_indices=(0, 3))
        cp_model = small(out_type='featmap', out_indices=(0, 3), with_cp=True)
        cp_model.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 32, 32)
        grads = []
        for model in (ref, cp_model):
            model.zero_grad()
            outs = model(x.clone().requires_grad_())
            sum(o.sum() for o in outs).backward()
            grads.append(model.stages[1].blocks[0].mlp.fc1.weight.grad)
        torch.testing.assert_close(grads[0], grads[1])
        self.assertTrue(cp_model.stages[0].blocks[0].with_cp)

    def test_sync_bn_single_process(self):
        model = small(out_type='featmap', out_indices=(0, 1, 2, 3),
                      norm_cfg=dict(type='SyncBN', requires_grad=True))
        self.assertIsInstance(model.norm0, nn.SyncBatchNorm)
        outs = model.train()(torch.randn(2, 3, 32, 32))
        sum(o.sum() for o in outs).backward()

    def test_pointwise_convs_keep_pytorch_default_init(self):
        """As the authors' release: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from
        kaiming_uniform(a=sqrt(5)), not ConvModule's kaiming fan-out normal
        (std sqrt(2/C), about 3.5 times the bound's std for these sizes)."""
        torch.manual_seed(0)
        model = small()
        model.init_weights()
        for stage in model.stages:
            mixer = stage.blocks[0].mixer
            for module in (mixer.pointwise_in, mixer.pointwise_out):
                weight = module.conv.weight
                bound = weight[0].numel()**-0.5
                self.assertLessEqual(weight.abs().max().item(), bound)
                self.assertGreater(weight.std().item(), 0.5 * bound / 3**0.5)

    def test_kernel_size(self):
        model = small(kernel_size=5)
        self.assertEqual(
            model.stages[0].blocks[0].mixer.depthwise.conv.kernel_size, (5, 5))


def nchw_block(block, x):
    """A block (NHWC in and out) on an NCHW tensor."""
    return block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _block_output_by_hand(block, x):
    """The released dense backbone: pad to window, mix, crop."""
    H, W = x.shape[-2:]
    k = block.kernel_size
    padded = nn.functional.pad(x, (0, -W % k, 0, -H % k))
    y = x + block.mixer(padded)[..., :H, :W]
    return y + block.mlp(block.norm(y))


class TestPadToWindow(TestCase):

    def test_matches_released_behaviour(self):
        torch.manual_seed(0)
        block = DWNetBlock(16, pad_to_window=True).eval()
        # Non-zero BN statistics make the padded zeros matter.
        for m in block.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        x = torch.randn(1, 16, 10, 12)
        expected = _block_output_by_hand(block, x)
        torch.testing.assert_close(nchw_block(block, x), expected)
        block.pad_to_window = False
        unpadded = nchw_block(block, x)
        # Differs at the bottom/right border, not in the top-left corner.
        self.assertFalse(torch.allclose(unpadded, expected, atol=1e-4))
        torch.testing.assert_close(unpadded[..., :3, :3],
                                   expected[..., :3, :3])

    def test_no_padding_at_window_multiples(self):
        torch.manual_seed(0)
        model = small(out_type='featmap', out_indices=(0, 1, 2, 3),
                      pad_to_window=True).eval()
        plain = small(out_type='featmap', out_indices=(0, 1, 2, 3)).eval()
        plain.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 224, 224)  # 56, 28, 14, 7: all multiples of 7
        for a, b in zip(model(x), plain(x)):
            torch.testing.assert_close(a, b)


class TestLayerDepth(TestCase):

    def test_get_layer_depth(self):
        model = DWNet(arch='tiny')
        num_layers = 14  # 12 blocks + stem + last
        self.assertEqual(
            model.get_layer_depth('backbone.patch_embed.norm.weight',
                                  'backbone.'), (0, num_layers))
        self.assertEqual(
            model.get_layer_depth('backbone.stages.0.blocks.0.norm.weight',
                                  'backbone.'), (1, num_layers))
        self.assertEqual(
            model.get_layer_depth(
                'backbone.stages.2.blocks.5.mlp.fc1.weight', 'backbone.'),
            (10, num_layers))
        # downsampling of stage 1 feeds stage 2's first block
        self.assertEqual(
            model.get_layer_depth('backbone.stages.1.downsample.norm.weight',
                                  'backbone.'), (5, num_layers))
        self.assertEqual(
            model.get_layer_depth('backbone.norm3.weight', 'backbone.'),
            (13, num_layers))
        self.assertEqual(model.get_layer_depth('head.fc.weight', 'backbone.'),
                         (13, num_layers))
        for name, _ in model.named_parameters():
            depth, total = model.get_layer_depth(name)
            self.assertTrue(0 <= depth < total, name)


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_even_kernel_keeps_size_and_offsets(conv_type):
    # 12x12 kernels (the 384 fine-tune) cover offsets -6..+5 everywhere.
    model = small(conv_type=conv_type, kernel_size=12, out_type='featmap',
                  out_indices=(0, 1, 2, 3)).eval()
    outs = model(torch.randn(1, 3, 52, 60))
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 15), (7, 8), (4, 4),
                                                   (2, 2)]
    if conv_type == 'static':
        mixer = model.stages[0].blocks[0].mixer
        x = torch.zeros(1, 32, 13, 15)
        x[0, :, 6, 7] = 1
        conv = mixer.depthwise.conv
        conv.weight.data.zero_()
        conv.weight.data[:, :, 0, 0] = 1  # offset (-6, -6)
        out = conv(x)[..., :13, :15] - conv.bias.view(1, -1, 1, 1)
        assert out[0, 0, 12, 13].item() == 1
