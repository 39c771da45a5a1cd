"""The deploy form (DWNet.switch_to_deploy) and the fast inference paths."""
import importlib.util
import mmap
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.runner import load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.models import DWNet
from dwnet_mm.models.layers import (DeployDWNetBlock, DWNetBlock,
                                    InhomogeneousDynamicConv2d)
from dwnet_mm.ops import (i_dynamic_conv_from_hidden,
                          i_dynamic_conv_with_kernels, use_native, use_triton)

SMALL = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])
CONV_TYPES = ['static', 'dynamic', 'i_dynamic']
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
REPO = Path(__file__).resolve().parents[2]


def small(**kwargs):
    """A small DWNet; the classifier's pooled last stage unless
    ``out_type`` is given."""
    kwargs.setdefault('arch', deepcopy(SMALL))
    if 'out_type' not in kwargs:
        kwargs.update(out_type='avg_featmap', out_indices=-1)
    return DWNet(**kwargs)


def randomize_norms(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so that a wrong
    fold cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen)
                                 * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen)
                                * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen)
                                + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) -
                              0.5)
    return model


def trained_like(**kwargs):
    torch.manual_seed(0)
    return randomize_norms(small(**kwargs)).eval()


def assert_rel_close(actual, expected, rel=1e-4):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        err = (a - e).abs().max().item()
        assert err <= rel * e.abs().max().item(), (err, e.abs().max())


def has_batchnorm(model):
    return any(isinstance(m, _BatchNorm) for m in model.modules())


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('conv_type', CONV_TYPES)
@pytest.mark.parametrize('dense', [False, True])
def test_deploy_matches_eval_training_form(conv_type, dense, device,
                                           no_tf32):
    kwargs = dict(conv_type=conv_type)
    if dense:
        kwargs.update(out_type='featmap', out_indices=(0, 1, 2, 3))
    model = trained_like(**kwargs).to(device)
    deployed = deepcopy(model).switch_to_deploy()
    assert deployed.deploy and not has_batchnorm(deployed)
    # Odd sizes: padding in the stem and in every patch merging, and a
    # 1x1 last stage.
    for shape in [(2, 3, 61, 75), (1, 3, 33, 45), (3, 3, 32, 32)]:
        x = torch.randn(*shape).to(device)
        with torch.no_grad():
            assert_rel_close(deployed(x), model(x))


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_deploy_with_pad_to_window(conv_type):
    model = trained_like(conv_type=conv_type, out_type='featmap',
                         out_indices=(0, 1, 2, 3), pad_to_window=True)
    deployed = deepcopy(model).switch_to_deploy()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert_rel_close(deployed(x), model(x))


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_deploy_with_even_kernel(conv_type):
    # 12x12 kernels (384 fine-tune) keep offsets -6..+5.
    model = trained_like(conv_type=conv_type, kernel_size=12,
                         out_type='featmap', out_indices=(0, 1, 2, 3))
    deployed = deepcopy(model).switch_to_deploy()
    x = torch.randn(2, 3, 52, 60)
    with torch.no_grad():
        assert_rel_close(deployed(x), model(x))
    model.train()
    x.requires_grad_()
    sum(o.sum() for o in model(x)).backward()  # training backward too
    assert torch.isfinite(x.grad).all()


def test_deploy_folds_stem_batchnorms():
    model = trained_like(stem_norm_cfg=dict(type='BN'))
    deployed = deepcopy(model).switch_to_deploy()
    assert not has_batchnorm(deployed)
    x = torch.randn(2, 3, 50, 46)
    with torch.no_grad():
        assert_rel_close(deployed(x), model(x))


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_deploy_form_is_differentiable(conv_type):
    """With autograd the deploy form runs out of place, and agrees with
    its in-place inference path."""
    model = trained_like(conv_type=conv_type).switch_to_deploy()
    x = torch.randn(2, 3, 40, 36, requires_grad=True)
    out = model(x)[0]
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert_rel_close(model(x), (out, ), rel=1e-5)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.bfloat16)] + (
    [('cuda', torch.float16), ('cuda', torch.bfloat16)]
    if torch.cuda.is_available() else []))
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_deploy_form_under_autocast(conv_type, device, dtype):
    model = trained_like(conv_type=conv_type).switch_to_deploy().to(device)
    x = torch.randn(2, 3, 32, 40).to(device)
    with torch.no_grad():
        expected = model(x)[0]
        with torch.autocast(device, dtype=dtype):
            out = model(x)[0]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1)


def test_switch_to_deploy_is_idempotent():
    model = trained_like(conv_type='dynamic')
    deployed = model.switch_to_deploy()
    assert deployed is model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.switch_to_deploy() is model
    after = model.state_dict()
    assert list(after) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_deploy_argument_builds_the_deployed_layout(conv_type):
    model = trained_like(conv_type=conv_type)
    deployed = deepcopy(model).switch_to_deploy()
    built = small(conv_type=conv_type, deploy=True).eval()
    assert built.deploy and not has_batchnorm(built)
    assert {k: v.shape for k, v in built.state_dict().items()} == \
        {k: v.shape for k, v in deployed.state_dict().items()}
    built.load_state_dict(deployed.state_dict())
    x = torch.randn(2, 3, 45, 51)
    with torch.no_grad():
        assert_rel_close(built(x), model(x))


def test_training_state_dict_into_deployed_model_is_folded():
    model = trained_like(conv_type='i_dynamic')
    target = small(conv_type='i_dynamic', deploy=True).eval()
    result = target.load_state_dict(model.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert_rel_close(target(x), model(x))


class Classifier(nn.Module):
    """A backbone under the ``backbone.`` prefix, as in mm checkpoints."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels[-1], 5)


def test_training_checkpoint_file_into_deployed_classifier(tmp_path):
    trained = Classifier(trained_like(conv_type='dynamic'))
    path = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=trained.state_dict(), meta={}), path)

    deployed = Classifier(small(conv_type='dynamic', deploy=True)).eval()
    load_checkpoint(deployed, str(path), map_location='cpu', strict=True)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert_rel_close(
            (deployed.head(deployed.backbone(x)[0]), ),
            (trained.head(trained.backbone(x)[0]), ))


def test_incomplete_training_state_dict_is_refused():
    state = trained_like().state_dict()
    del state['stages.1.blocks.0.mixer.depthwise.norm.running_var']
    model = small(deploy=True)
    with pytest.raises(RuntimeError, match=r'lacks 1 backbone tensors.*'
                       r'stages\.1\.blocks\.0\.mixer\.depthwise\.norm'):
        model.load_state_dict(state, strict=False)


def test_deployed_state_dict_into_training_model_is_refused():
    state = small(deploy=True).state_dict()
    with pytest.raises(RuntimeError, match='deploy=True'):
        small().load_state_dict(state)


def test_pretrained_init_of_a_deployed_model(tmp_path):
    trained = trained_like(conv_type='static')
    path = tmp_path / 'backbone.pth'
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in trained.state_dict().items()
        }), path)
    model = small(
        deploy=True,
        init_cfg=dict(type='Pretrained', checkpoint=str(path))).eval()
    model.init_weights()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert_rel_close(model(x), trained(x))


def test_deploy_needs_batchnorm():
    model = small(norm_cfg=dict(type='GN', num_groups=4))
    with pytest.raises(TypeError, match="type='BN'"):
        model.switch_to_deploy()


def test_deploy_block_keeps_its_input():
    block = randomize_norms(DWNetBlock(16)).eval()
    deployed = block.fuse()
    assert isinstance(deployed, DeployDWNetBlock)
    x = torch.randn(2, 9, 10, 16)
    before = x.clone()
    with torch.no_grad():
        assert_rel_close((deployed(x), ), (block(x), ))
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_training_form_keeps_channels_last_memory():
    """The blocks' activations stay channels-last (no layout round trip
    per block); the dense outputs are plain contiguous NCHW tensors."""
    model = small(out_type='featmap', out_indices=(0, 1, 2, 3)).eval()
    seen = []
    for stage in model.stages:
        for block in stage.blocks:
            block.mixer.register_forward_hook(
                lambda m, args, out: seen.append(out))
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(seen) == 5
    for out in seen:
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert [tuple(o.shape[1:]) for o in outs] == [(32, 16, 16), (64, 8, 8),
                                                  (128, 4, 4), (256, 2, 2)]
    assert all(o.is_contiguous() for o in outs)


def test_fused_drop_path_matches_mmcv():
    block = DWNetBlock(8, drop_path_rate=0.5).train()
    x, y = torch.randn(16, 8, 3, 3), torch.randn(16, 8, 3, 3)
    torch.manual_seed(3)
    fused = block._residual(x, y)
    torch.manual_seed(3)
    expected = x + DropPath(0.5).train()(y)
    torch.testing.assert_close(fused, expected)
    assert not torch.equal(fused, x + y)  # some samples were dropped


def naive_i_dynamic(x, weight, k):
    B, C, H, W = x.shape
    G = weight.shape[1] // (k * k)
    cols = nn.functional.unfold(x, k, padding=k // 2).view(
        B, G, C // G, k * k, H, W)
    return (cols * weight.view(B, G, 1, k * k, H, W)).sum(3).view(B, C, H, W)


@pytest.mark.parametrize(
    'B,C,H,W,G,k',
    [
        (2, 8, 11, 7, 4, 5),  # PyTorch ops: odd sizes
        (5, 8, 6, 9, 4, 3),
        (1, 6, 4, 4, 2, 7),  # kernel larger than the image
        (2, 16, 9, 11, 8, 7),  # the native kernels where built
    ])
def test_i_dynamic_op_matches_naive(B, C, H, W, G, k):
    torch.manual_seed(0)
    hidden_width = 6
    x = torch.randn(B, C, H, W).contiguous(memory_format=torch.channels_last)
    hidden = torch.randn(B, H, W, hidden_width)
    weight = torch.randn(G * k * k, hidden_width)
    bias = torch.randn(G * k * k)
    scale, shift = torch.rand(C) + 0.5, torch.randn(C)
    kernels = (hidden @ weight.t() + bias).permute(0, 3, 1, 2)
    expected = naive_i_dynamic(x * scale.view(1, C, 1, 1), kernels, k) + \
        shift.view(1, C, 1, 1)
    # The op takes the generator's rows tap-major, (k*k, G).
    tap_major = weight.view(G, k * k, -1).transpose(0, 1).reshape(
        G * k * k, -1), bias.view(G, k * k).t().reshape(-1)
    with torch.no_grad():
        out = i_dynamic_conv_from_hidden(x.permute(0, 2, 3, 1),
                                         hidden,
                                         *tap_major,
                                         k,
                                         G,
                                         input_scale=scale,
                                         out_bias=shift)
    torch.testing.assert_close(out.permute(0, 3, 1, 2), expected, rtol=1e-5,
                               atol=1e-5)
    # The autograd op, chunked the same way, forward and backward.
    xg = x.detach().clone().requires_grad_()
    kg = kernels.detach().clone().requires_grad_()
    grad = torch.randn(B, C, H, W)
    out = i_dynamic_conv_with_kernels(xg, kg, k)
    grads = torch.autograd.grad((out * grad).sum(), (xg, kg))
    xr = x.detach().clone().requires_grad_()
    kr = kernels.detach().clone().requires_grad_()
    ref = naive_i_dynamic(xr, kr, k)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, torch.autograd.grad((ref * grad).sum(),
                                               (xr, kr))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('train', [False, True])
def test_i_dynamic_module_gradients_match_naive(train):
    """The fast training path (bias in the GEMM, kernels masked in place)
    has the gradients of the plain formula."""
    torch.manual_seed(0)
    module = randomize_norms(
        InhomogeneousDynamicConv2d(16, 5, i_dynamic_groups=4))
    module.train(train)
    x = torch.randn(3, 16, 9, 8).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(3, 16, 9, 8)
    params = [x] + list(module.parameters())
    fast = torch.autograd.grad((module(x) * grad).sum(), params)
    ref_out = naive_i_dynamic(x, module.conv2(module.conv1(x)), 5)
    ref = torch.autograd.grad((ref_out * grad).sum(), params)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        'dwnet_benchmark', REPO / 'tools' / 'analysis' / 'benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cpu_peak_memory_sees_tensors():
    benchmark = _load_benchmark()

    def allocate():
        a = torch.ones(1 << 20)  # 4 MiB
        b = a * 2  # 8 MiB live
        del a
        return b.sum()

    peak = benchmark.cpu_peak_memory(allocate)
    assert 8 << 20 <= peak < 9 << 20


def test_benchmark_runs_deploy_form(capsys):
    benchmark = _load_benchmark()
    results = benchmark.main([
        '--models', 'dwnet_tiny', '--deploy', '--batch-size', '1', '--size',
        '32', '--repeats', '1', '--gemm-size', '128'
    ])
    (row, ) = results['results']
    assert row['form'] == 'deploy'
    # The rate is the batch over the median of the timed rounds.
    assert len(row['times_s']) == 1
    assert row['img_per_s'] == pytest.approx(1 / row['times_s'][0])
    # What a step allocates: at least the stage-0 output map (8x8x96 fp32),
    # far less than a copy of the 28M weights (107 MiB).
    assert 8 * 8 * 96 * 4 / 2**20 <= row['peak_memory_mib'] < 32
    out = capsys.readouterr().out
    assert 'DWNet-T (deploy)' in out and 'GEMM peak' in out


def test_benchmark_pytorch_ops_twin(capsys):
    benchmark = _load_benchmark()
    results = benchmark.main([
        '--models', 'dynamic_dwnet_tiny', '--forms', 'train', '--modes',
        'train', '--batch-size', '2', '--size', '32', '--repeats', '1',
        '--warmup', '0', '--gemm-size', '128', '--no-memory', '--pytorch-ops',
        '--adamw', 'foreach', '--device', 'cpu'
    ])
    assert [r['native'] for r in results['results']] == [True, False]
    out = capsys.readouterr().out
    assert 'D-DWNet-T (PyTorch ops)' in out
    assert '- training_optimizer: torch.optim.AdamW, foreach' in out
    # The twin's steps leave the switches as they found them.
    assert use_native() and use_triton()


@pytest.mark.parametrize('runtime,label', [('onnxruntime', 'ONNX Runtime'),
                                           ('openvino', 'OpenVINO')])
def test_benchmark_exported_peer(runtime, label, capsys, tmp_path):
    pytest.importorskip(runtime)
    benchmark = _load_benchmark()
    results = benchmark.main([
        '--models', 'dwnet_tiny', '--deploy', '--batch-size', '1', '--size',
        '32', '--repeats', '1', '--gemm-size', '128', '--no-memory',
        '--device', 'cpu', '--runtimes', runtime
    ])
    assert [(r['form'], r['runtime']) for r in results['results']] == [
        ('deploy', 'torch'), ('deploy', runtime)]
    assert f'DWNet-T (deploy, {label})' in capsys.readouterr().out
    # The peer computes the same function, at another size and batch.
    model = benchmark.build_classifier('dwnet_tiny', 'deploy')
    x = torch.randn(2, 3, 40, 56)
    entry = benchmark.Entry('dwnet_tiny', 'deploy', 'infer', model, x, None,
                            'cpu')
    peer = benchmark.ExportedEntry(entry, runtime, str(tmp_path), threads=1)
    from dwnet_mm.export import max_relative_error
    with torch.no_grad():
        expected = model(x, mode='tensor')
    assert max_relative_error(peer.run(x), [expected]) < 1e-4


def _training_entry(benchmark, size, **kwargs):
    model = benchmark.build_classifier('dwnet_tiny')
    return model, benchmark.Entry(
        'dwnet_tiny', 'train', 'train', model, torch.randn(2, 3, size, size),
        torch.tensor([1, 2]), 'cpu', **kwargs)


@pytest.mark.parametrize('adamw', ['fused', 'foreach', 'for-loop'])
def test_benchmark_training_step_adamw(adamw):
    benchmark = _load_benchmark()
    model, entry = _training_entry(benchmark, 32, adamw=adamw)
    defaults = entry.optimizer.defaults
    assert bool(defaults['fused']) == (adamw == 'fused')
    assert bool(defaults['foreach']) == (adamw == 'foreach')
    before = [p.detach().clone() for p in model.parameters()]
    entry.step()
    assert any(not torch.equal(b, p)
               for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
def test_benchmark_mixed_precision_step(dtype):
    benchmark = _load_benchmark()
    model, entry = _training_entry(benchmark, 64, dtype=dtype)
    # fp16 scales the loss, as mmengine's AmpOptimWrapper does.
    assert (entry.scaler is not None) == (dtype == 'fp16')
    seen = []
    model.head.fc.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    # 64x64, not 32x32: BatchNorm over a 1x1 last stage of two images
    # overflows fp16 gradients. The GradScaler skips the steps whose scaled
    # gradients overflow and halves its scale: a few steps reach one.
    for _ in range(8):
        entry.step()
        if any(not torch.equal(b, p)
               for b, p in zip(before, model.parameters())):
            break
    else:
        raise AssertionError('no step changed the weights')
    assert set(seen) == {benchmark.DTYPES[dtype]}
    gemm = benchmark.GemmPeak(64, 'cpu', count=1, dtype=dtype)
    assert gemm.a.dtype == benchmark.DTYPES[dtype] and gemm.run() > 0


def test_benchmark_counts_page_faults():
    benchmark = _load_benchmark()
    pages = 4096
    memory = mmap.mmap(-1, pages * mmap.PAGESIZE)  # fresh from the kernel
    if hasattr(mmap, 'MADV_NOHUGEPAGE'):  # one fault per 4 KiB page
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    before = benchmark.minor_faults()
    for page in range(pages):
        memory[page * mmap.PAGESIZE] = 1
    assert benchmark.minor_faults() - before >= pages
    memory.close()


def test_benchmark_malloc_keep_in_its_own_process():
    # A subprocess: mallopt would change this test process for good.
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'analysis' / 'benchmark.py'),
         '--models', 'dwnet_tiny', '--deploy', '--batch-size', '1',
         '--size', '32', '--repeats', '2', '--gemm-size', '64',
         '--no-memory', '--malloc', 'keep'],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '- malloc: glibc, keeps freed memory' in result.stdout
    row = next(line for line in result.stdout.splitlines()
               if line.startswith('| DWNet-T (deploy) |'))
    assert row.split('|')[7].strip().endswith('k')  # page faults/step


def test_i_dynamic_layer_memory_within_twice_static():
    """The chunked i_dynamic inference holds at most 2x the static DW
    layer's peak memory, in both forms, at every stage of DWNet-T (batch 8,
    as the benchmark; at batch 1 the 7x7 stage has fixed costs)."""
    rows = _load_benchmark().layer_memory(8, 224, 'cpu')
    assert [row['stage'] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row['i_dynamic_mixer'] <= 2 * row['static_mixer'], row
        assert row['i_dynamic_deploy_block'] <= \
            2 * row['static_deploy_block'], row


def test_benchmark_gemm_peak_is_torch_mm():
    """The peak of a round is torch.mm's rate on the squares."""
    benchmark = _load_benchmark()
    gemm = benchmark.GemmPeak(64, 'cpu', count=1)
    rate = gemm.run()
    assert gemm.rates == [rate] and rate > 0
