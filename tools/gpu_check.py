"""CUDA correctness and speed of dwnet_mm in one command (tools/gpu_check.sh).

For a GPU machine that has PyTorch (and Triton) but no OpenMMLab packages
and no internet: it installs those from wheels prepared beforehand
(``tools/prepare_gpu_wheels.sh``, into ``.wheels/``; only the ones whose
modules are missing, into ``.gpu_site/``), then runs five sections, each in
its own process with a time limit:

reference
    The independent reference suite's parametrisation for the device
    (``tests/test_reference``): the backbone in every form (training,
    deploy, PyTorch ops; eval outputs, gradients and BN statistics), the
    classifiers, the segmentor and the detectors, equal to the reference in
    fp32 with TF32 off (1e-4 relative); the backbone, classifiers, segmentor
    and the detectors' backbone + FPN under bf16/fp16 autocast within the
    tolerances of ``test_autocast_vs_reference.py`` (bf16 4e-2, fp16 5e-3).
triton
    The Triton I-Dynamic kernel: the tests of
    ``tests/test_ops/test_triton_i_dynamic_conv.py`` (fp32 against fp64,
    gradcheck), then forward and both gradients against the PyTorch form,
    for fp32, bf16 and fp16 inputs, each against fp64 (tolerances:
    :data:`TRITON_TOL`). On the CPU through Triton's interpreter.
amp
    One training step of each conv type's classifier through mmengine's
    AmpOptimWrapper (bf16, and fp16 with dynamic loss scaling on CUDA)
    beside the same step in fp32 (TF32 off) from the same weights: the
    loss, every gradient and the updated weights finite, the loss within
    :data:`AMP_LOSS_TOL` of fp32's.
benchmark
    ``tools/analysis/benchmark.py`` against mmpretrain's Swin-T and
    ConvNeXt-T, fp32 and bf16, inference and training step, batch 128; the
    speed targets of issue #36 read off it. With ``--device cpu`` it runs
    once, tiny (fp32, batch 2, 64x64, one round, I-Dynamic-T and Swin-T),
    to keep the command working, and reports no figures.
detector
    One training step of the Cascade Mask R-CNN
    (``configs/det/cascade_dwnet_tiny_3x.py``, its own optim_wrapper on
    CUDA) at 800x1333 with peak memory, where mmcv's compiled ops exist;
    without them (mmcv-lite), the backbone + FPN's forward and backward.

Where mmcv has no compiled ops for this torch, a stand-in ``mmcv._ext``
whose every op raises lets mmdet import; the detector's RoI heads are then
left out, and the summary says which tests and steps it skipped and why.
It writes ``summary.json``, ``summary.md``, ``gpu_check.log`` and the
benchmark's JSON under ``--out``; its exit status is 1 when a section
failed.
"""
import argparse
import datetime
import importlib.machinery
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ('reference', 'triton', 'amp', 'benchmark', 'detector')
# Seconds each section may take (the whole check: 8 minutes on one H100).
LIMITS = {
    'cuda': dict(environment=60, reference=170, triton=50, amp=50,
                 benchmark=160, detector=50),
    # Safety nets only: CI machines are slow and shared.
    'cpu': dict(environment=120, reference=400, triton=200, amp=300,
                benchmark=300, detector=300),
}
# tests/test_reference on the CPU: one case of each backbone test and a
# whole classifier, to keep the selection working (CI runs the whole CPU
# parametrisation in its own suite).
CPU_REFERENCE_KEYWORD = (
    'cpu and (test_eval_outputs[cpu-i_dynamic-True-True-deploy '
    'or test_train_step_float32[cpu-i_dynamic-False '
    'or test_backbone_autocast[cpu-bf16-i_dynamic-training '
    'or test_classifier_autocast[cpu-bf16-static) '
    'or test_a_wrong_model')
# Triton kernel vs fp64, relative L2 error of the output and of each
# gradient: fp32 inputs sum in fp32; bf16/fp16 inputs are rounded (half an
# ulp: 2**-9 / 2**-12 per element) and so is the output.
TRITON_TOL = {'fp32': 1e-5, 'bf16': 1e-2, 'fp16': 2e-3}
# AMP step's loss against fp32's (relative): cross-entropy of 1000 classes
# at random init, logits off by the autocast's rounding (measured on the
# CPU, bf16, batch 2: 1.4e-3 static, 2.2e-3 dynamic, 1.1e-2 I-Dynamic,
# whose kernel generators' train-mode BN over 2 pooled samples is
# ill-conditioned).
AMP_LOSS_TOL = {'bf16': 3e-2, 'fp16': 5e-3}
# Issue #36's targets, vs Swin-T, every mode and dtype.
TARGETS = {'dwnet_tiny': 1.3, 'dynamic_dwnet_tiny': 1.2,
           'i_dynamic_dwnet_tiny': 1.0}
CLS_CONFIGS = {
    'static': 'configs/cls/dwnet-tiny_8xb128_in1k.py',
    'dynamic': 'configs/cls/dynamic-dwnet-tiny_8xb128_in1k.py',
    'i_dynamic': 'configs/cls/i-dynamic-dwnet-tiny_8xb128_in1k.py',
}
DET_CONFIG = 'configs/det/cascade_dwnet_tiny_3x.py'
NO_MMCV_OPS = 'GPU_CHECK_NO_MMCV_OPS'
# --device cpu: the benchmark's command kept working, on two models (the
# train form, inference and training step).
CPU_BENCHMARK_MODELS = ('i_dynamic_dwnet_tiny', 'swin_tiny')


# ----------------------------------------------------------------------------
# Shared by the main process and the workers
# ----------------------------------------------------------------------------
def stub_mmcv_ops():
    """Let ``mmcv.ops`` (and so mmdet) import where mmcv has no compiled ops:
    a stand-in ``mmcv._ext`` whose every op raises when called."""
    import types

    class MissingOps(types.ModuleType):

        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)

            def missing(*args, **kwargs):
                raise RuntimeError(
                    f"mmcv's compiled op '{name}' is missing here (mmcv-lite "
                    '/ no mmcv build for this torch); gpu_check skips what '
                    'needs it')

            return missing

    stub = MissingOps('mmcv._ext')
    # No loader: mmengine's mmcv_full_available() still answers False.
    stub.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
    sys.modules['mmcv._ext'] = stub


def worker_setup(args):
    if os.environ.get(NO_MMCV_OPS) == '1':
        stub_mmcv_ops()
    import torch
    torch.manual_seed(0)
    # fp32 baselines are fp32 (the autocast steps are unaffected).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def relative_error(got, want):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def run_pytest(paths, keyword, junit, extra=()):
    import pytest
    args = [*paths, '-k', keyword, '-q', '-rs', '-p', 'no:cacheprovider',
            f'--junitxml={junit}', *extra]
    print('pytest ' + ' '.join(repr(a) if ' ' in a else a for a in args),
          flush=True)
    return int(pytest.main(args))


def read_junit(path):
    """Test cases of a JUnit XML: [(node, outcome, message)]."""
    cases = []
    if not Path(path).exists():
        return cases
    for case in ET.parse(path).getroot().iter('testcase'):
        node = f'{case.get("classname")}::{case.get("name")}'
        outcome, message = 'passed', ''
        for tag in ('failure', 'error', 'skipped'):
            element = case.find(tag)
            if element is not None:
                outcome = 'failed' if tag != 'skipped' else 'skipped'
                message = (element.get('message') or '').strip()
                break
        cases.append((node, outcome, message))
    return cases


def summarise_cases(cases):
    """Counts per test function, the skip reasons, the failures."""
    groups = defaultdict(Counter)
    skipped, failed = Counter(), []
    for node, outcome, message in cases:
        module, name = node.split('::', 1)
        group = f'{module.split(".")[-1]}::{name.split("[")[0]}'
        groups[group][outcome] += 1
        if outcome == 'skipped':
            skipped[message.replace('Skipped: ', '')] += 1
        elif outcome == 'failed':
            failed.append(f'{node}: {message[:300]}')
    return dict(
        tests={g: dict(c) for g, c in sorted(groups.items())},
        skipped_tests=[dict(count=n, why=why) for why, n in skipped.items()],
        failures=failed)


def pytest_status(code, cases):
    counts = Counter(outcome for _, outcome, _ in cases)
    if code == 0 and counts['passed'] and not counts['failed']:
        return 'passed'
    return 'failed'


# ----------------------------------------------------------------------------
# Workers (each run as: gpu_check.py --worker NAME ...)
# ----------------------------------------------------------------------------
def worker_environment(args):
    torch = worker_setup(args)
    env = dict(python=platform.python_version(), torch=torch.__version__,
               cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version()
               if torch.backends.cudnn.is_available() else None)
    if args.device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda, but torch sees no GPU')
        props = torch.cuda.get_device_properties(0)
        env.update(card=torch.cuda.get_device_name(0),
                   card_memory_mib=props.total_memory // 2**20,
                   multiprocessors=props.multi_processor_count)
    else:
        env.update(card=f'CPU: {platform.processor() or platform.machine()}'
                   f', {os.cpu_count()} cores, {torch.get_num_threads()} '
                   'torch threads')
    packages = {}
    for name in ('mmengine', 'mmcv', 'mmpretrain', 'mmdet', 'mmseg',
                 'triton', 'numpy', 'dwnet_mm'):
        try:
            module = importlib.import_module(name)
            packages[name] = getattr(module, '__version__', '?')
        except Exception as e:  # noqa: BLE001 (reported, not raised)
            packages[name] = f'missing ({type(e).__name__}: {e})'[:200]
    env['packages'] = packages
    env['mmcv_ops'] = mmcv_ops_status(args.device, packages)
    return dict(env, status='passed', summary=env['card'])


def mmcv_ops_status(device, packages):
    if os.environ.get(NO_MMCV_OPS) == '1' and 'mmcv._ext' in sys.modules \
            and type(sys.modules['mmcv._ext']).__name__ == 'MissingOps':
        return dict(available=False, reason='turned off (--without-mmcv-ops)')
    if packages['mmcv'].startswith('missing'):
        return dict(available=False, reason='mmcv is not installed')
    if importlib.util.find_spec('mmcv._ext') is None:
        import torch
        return dict(available=False, reason=(
            f'mmcv {packages["mmcv"]} has no compiled ops (mmcv-lite): no '
            f'mmcv wheel with ops exists for torch {torch.__version__}'))
    from mmcv.ops import get_compiling_cuda_version
    cuda = get_compiling_cuda_version()
    if device == 'cuda' and cuda == 'not available':
        return dict(available=False,
                    reason="mmcv's compiled ops were built without CUDA")
    return dict(available=True, reason=f'mmcv {packages["mmcv"]} with '
                f'compiled ops (CUDA: {cuda})')


def worker_reference(args):
    worker_setup(args)
    files = [f'tests/test_reference/{name}.py' for name in (
        'test_backbone_vs_reference', 'test_autocast_vs_reference',
        'test_pipelines_vs_reference')]
    keyword = 'cuda' if args.device == 'cuda' else CPU_REFERENCE_KEYWORD
    skipped = []
    if os.environ.get(NO_MMCV_OPS) == '1':
        keyword = f'({keyword}) and not test_detector and not channels_last'
        skipped.append(dict(
            what='test_pipelines_vs_reference.py::test_detector (whole '
            'Cascade Mask R-CNNs: RPN, RoIAlign, NMS, box and mask heads)',
            why=args.mmcv_reason))
    extra = []
    if args.device == 'cuda' and importlib.util.find_spec('xdist'):
        extra = ['-n', '4']  # models are built on the CPU side
    if args.device == 'cpu':
        skipped.append(dict(
            what='the segmentor and detector cases, the fp32 classifier, and '
            'all but one case of each backbone test', why='--device cpu '
            'keeps the check short; CI '
            "runs the whole CPU parametrisation in the project's suite"))
    junit = Path(args.scratch) / 'reference.xml'
    code = run_pytest(files, keyword, junit, extra)
    cases = read_junit(junit)
    details = summarise_cases(cases)
    details['keyword'] = keyword
    return dict(status=pytest_status(code, cases), details=details,
                skipped=skipped, summary=case_line(cases))


def case_line(cases):
    counts = Counter(outcome for _, outcome, _ in cases)
    return ', '.join(f'{counts[k]} {k}' for k in ('passed', 'failed',
                                                  'skipped') if counts[k])


def triton_shapes(device):
    # (B, C, G, H, W, k): a stage-1-like map with 8 channels per group, an
    # odd map with 10 channels per group (padded to 16) and a partial
    # pixel block; on the CPU (interpreter) one small case.
    if device == 'cuda':
        return [(4, 96, 12, 56, 56, 7), (3, 40, 4, 17, 23, 7)]
    return [(1, 6, 2, 5, 7, 3)]


def worker_triton(args):
    torch = worker_setup(args)
    if importlib.util.find_spec('triton') is None:
        return dict(status='skipped', summary='triton is not installed',
                    skipped=[dict(what='the Triton I-Dynamic kernel',
                                  why='triton is not installed here')])
    junit = Path(args.scratch) / 'triton.xml'
    # On the CPU, the interpreted fp32/fp64 test is left to CI's own suite
    # (minutes in the interpreter); the dtype checks below run there.
    keyword = 'on_cuda or rejects or cpu_tensors' if args.device == 'cuda' \
        else 'rejects or cpu_tensors'
    code = run_pytest(['tests/test_ops/test_triton_i_dynamic_conv.py'],
                      keyword, junit)
    cases = read_junit(junit)
    details = summarise_cases(cases)
    from dwnet_mm.ops import (backend_for, i_dynamic_conv_with_kernels,
                              set_triton)
    dtypes = {'fp32': torch.float32, 'bf16': torch.bfloat16,
              'fp16': torch.float16}
    rows, failures = [], list(details['failures'])
    for name, dtype in dtypes.items():
        for B, C, G, H, W, k in triton_shapes(args.device):
            torch.manual_seed(len(rows))
            x = torch.randn(B, C, H, W, device=args.device).to(dtype)
            w = (torch.randn(B, G * k * k, H, W, device=args.device) /
                 k).to(dtype)
            grad = torch.randn(B, C, H, W, device=args.device).to(dtype)
            results = {}
            for path in ('triton', 'pytorch'):
                set_triton(path == 'triton')
                assert (backend_for(x, triton=True) == 'triton') == (
                    path == 'triton'), path
                xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
                out = i_dynamic_conv_with_kernels(xs, ws, k)
                out.backward(grad)
                results[path] = (out, xs.grad, ws.grad)
            set_triton(False)
            x64 = x.cpu().double().requires_grad_()
            w64 = w.cpu().double().requires_grad_()
            out64 = i_dynamic_conv_with_kernels(x64, w64, k)
            out64.backward(grad.cpu().double())
            want = (out64, x64.grad, w64.grad)
            row = dict(dtype=name, shape=[B, C, G, H, W, k])
            for path, got in results.items():
                for part, g, r in zip(('out', 'grad_x', 'grad_w'), got, want):
                    assert g.dtype == dtype, (path, part, g.dtype)
                    row[f'{path}_{part}'] = relative_error(g, r)
            for part, a, b in zip(('out', 'grad_x', 'grad_w'),
                                  results['triton'], results['pytorch']):
                row[f'triton_vs_pytorch_{part}'] = relative_error(a, b)
            worst = max(row[f'{p}_{q}'] for p in ('triton', 'pytorch')
                        for q in ('out', 'grad_x', 'grad_w'))
            row['tolerance'] = TRITON_TOL[name]
            if not worst < TRITON_TOL[name]:  # NaN fails too
                failures.append(f'{name} {row["shape"]}: error {worst:.2e} '
                                f'>= {TRITON_TOL[name]:.0e}')
            rows.append(row)
    set_triton(True)
    details.update(dtype_checks=rows, failures=failures)
    ok = not failures and pytest_status(code, cases) == 'passed'
    worst = {n: max(max(r[f'triton_{p}'] for p in ('out', 'grad_x',
                                                   'grad_w'))
                    for r in rows if r['dtype'] == n) for n in dtypes}
    return dict(status='passed' if ok else 'failed', details=details,
                summary=f'{case_line(cases)}; kernel vs fp64, worst of '
                'out/grad_x/grad_w: ' + ', '.join(
                    f'{n} {e:.1e}' for n, e in worst.items()))


def classifier_batch(device, size, batch):
    import torch
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (batch, 3, size, size),
                           generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 1000, (batch, ), generator=generator)
    return dict(inputs=list(images),
                data_samples=[DataSample().set_gt_label(int(label))
                              for label in labels])


def build_from_config(path, scope, edit=None):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    import dwnet_mm  # noqa: F401  (registers DWNet)
    cfg = Config.fromfile(str(ROOT / path))
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry')
    cfg.model.backbone.init_cfg = None
    if edit:
        edit(cfg)
    return cfg, revert_sync_batchnorm(registry.MODELS.build(cfg.model))


def worker_amp(args):
    torch = worker_setup(args)
    from copy import deepcopy

    from mmengine.optim import build_optim_wrapper
    skipped = []
    dtypes = ['bf16', 'fp16'] if args.device == 'cuda' else ['bf16']
    if args.device == 'cpu':
        # AmpOptimWrapper refuses to be built without a GPU; on the CPU its
        # GradScaler turns itself off, so fp16 (which needs it) is left out.
        from mmengine.optim.optimizer import amp_optimizer_wrapper
        amp_optimizer_wrapper.is_cuda_available = lambda: True
        skipped.append(dict(what='fp16 AMP step', why='the CPU has no '
                            'GradScaler (it disables itself without CUDA)'))
    size, batch = (224, 16) if args.device == 'cuda' else (64, 2)

    def edit(cfg):
        # The same computation in both runs: no stochastic depth, no
        # Mixup/CutMix.
        cfg.model.backbone.drop_path_rate = 0.
        cfg.model.train_cfg = None

    rows, failures = [], []
    for conv_type, config in CLS_CONFIGS.items():
        cfg, model = build_from_config(config, 'mmpretrain', edit)
        model.to(args.device)
        data = classifier_batch(args.device, size, batch)
        start = deepcopy(model.state_dict())
        losses = {}
        for precision in ['fp32'] + dtypes:
            model.load_state_dict(start)
            wrapper_cfg = deepcopy(cfg.optim_wrapper)
            if precision == 'fp32':
                wrapper_cfg.type = 'OptimWrapper'
                wrapper_cfg.pop('loss_scale', None)
            else:
                wrapper_cfg.update(type='AmpOptimWrapper', dtype={
                    'bf16': 'bfloat16', 'fp16': 'float16'}[precision])
                wrapper_cfg.setdefault('loss_scale', 'dynamic')
            wrapper = build_optim_wrapper(model, wrapper_cfg)
            torch.manual_seed(1)
            # A recipe that accumulates gradients (I-Dynamic-T) steps the
            # optimizer on its last micro-batch only.
            for _ in range(wrapper_cfg.get('accumulative_counts', 1)):
                log_vars = model.train_step(data, wrapper)
                loss = losses.get(precision, float(log_vars['loss'].detach()))
                losses.setdefault(precision, loss)
            params = [p for p in model.parameters() if p.requires_grad]
            finite = math.isfinite(loss) and all(
                torch.isfinite(p).all() for p in params)
            moved = sum(not torch.equal(p.detach(), start[n].to(p.device))
                        for n, p in model.named_parameters()
                        if n in start and p.requires_grad)
            row = dict(conv_type=conv_type, precision=precision, loss=loss,
                       finite=bool(finite),
                       params_updated=f'{moved}/{len(params)}',
                       wrapper=type(wrapper).__name__)
            if precision != 'fp32':
                row['loss_vs_fp32'] = abs(loss - losses['fp32']) / \
                    abs(losses['fp32'])
                row['tolerance'] = AMP_LOSS_TOL[precision]
                if not row['loss_vs_fp32'] < AMP_LOSS_TOL[precision]:
                    failures.append(f'{conv_type} {precision}: loss '
                                    f'{loss:.5f} vs fp32 {losses["fp32"]:.5f}')
                # fp16's scaler may skip a first step whose gradients
                # overflowed: grads then are inf by design, weights kept.
                scaler = getattr(wrapper, 'loss_scaler', None)
                row['loss_scale'] = float(scaler.get_scale()) if (
                    scaler is not None and scaler.is_enabled()) else None
            # Non-finite gradients would leave non-finite weights (AdamW),
            # except where fp16's scaler skips the step.
            if not finite:
                failures.append(f'{conv_type} {precision}: not finite')
            if precision != 'fp16' and moved == 0:
                failures.append(f'{conv_type} {precision}: no weight moved')
            rows.append(row)
    return dict(status='failed' if failures else 'passed', skipped=skipped,
                details=dict(steps=rows, failures=failures, batch=batch,
                             size=size),
                summary=', '.join(
                    f'{r["conv_type"]} {r["precision"]} '
                    f'{r["loss_vs_fp32"]:.1e}' for r in rows
                    if 'loss_vs_fp32' in r) + ' (loss vs fp32)')


def det_batch(device, height, width, count=3):
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(4)
    image = torch.randint(0, 256, (3, height, width), generator=generator,
                          dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(
        img_shape=(height, width), ori_shape=(height, width),
        pad_shape=(height, width), scale_factor=(1., 1.), flip=False))
    x1 = torch.rand(count, generator=generator) * width * .6
    y1 = torch.rand(count, generator=generator) * height * .6
    boxes = torch.stack([x1, y1, x1 + width * .3, y1 + height * .3], 1)
    masks = torch.zeros(count, height, width, dtype=torch.uint8)
    for i, (a, b, c, d) in enumerate(boxes.round().long().tolist()):
        masks[i, b:d, a:c] = 1
    sample.gt_instances = InstanceData(
        bboxes=boxes, labels=torch.randint(0, 80, (count, ),
                                           generator=generator),
        masks=BitmapMasks(masks.numpy(), height, width))
    return dict(inputs=[image], data_samples=[sample])


def worker_detector(args):
    torch = worker_setup(args)
    from mmengine.optim import build_optim_wrapper
    height, width = (800, 1333) if args.device == 'cuda' else (160, 224)
    full = os.environ.get(NO_MMCV_OPS) != '1'
    skipped = [] if full else [dict(
        what='the Cascade Mask R-CNN training step (RPN, RoIAlign, NMS, '
        'box and mask heads); the backbone + FPN step runs instead',
        why=args.mmcv_reason)]

    def edit(cfg):
        cfg.model.backbone.drop_path_rate = 0.

    cfg, model = build_from_config(DET_CONFIG, 'mmdet', edit)
    model.to(args.device).train()
    if args.device == 'cuda':
        wrapper_cfg = cfg.optim_wrapper
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        wrapper_cfg = dict(type='OptimWrapper', optimizer=cfg.optim_wrapper[
            'optimizer'])
        skipped.append(dict(what='mixed precision in the detector step',
                            why="the CPU: the config's AmpOptimWrapper "
                            'needs CUDA; fp32 instead'))
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    data = det_batch(args.device, height, width)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = time.perf_counter()
    if full:
        log_vars = model.train_step(data, wrapper)
        losses = {k: float(v.detach()) for k, v in log_vars.items()}
        what = 'Cascade Mask R-CNN train_step'
    else:
        with wrapper.optim_context(model):
            batch = model.data_preprocessor(data, True)
            feats = model.neck(model.backbone(batch['inputs']))
            loss = sum(f.float().pow(2).mean() for f in feats)
        wrapper.update_params(loss)
        losses = {'loss (mean square of P2-P6)': float(loss.detach())}
        what = 'backbone + FPN forward/backward/step'
    if args.device == 'cuda':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    details = dict(step=what, size=[height, width], losses=losses,
                   optim_wrapper=type(wrapper).__name__,
                   first_step_seconds=seconds)
    if args.device == 'cuda':
        details['peak_memory_mib'] = \
            (torch.cuda.max_memory_allocated() - base) / 2**20
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    params = dict(model.named_parameters())
    moved = [n for n, p in before.items()
             if not torch.equal(p, params[n].detach())]
    details['parameters_updated'] = f'{len(moved)}/{len(before)}'
    if not all(torch.isfinite(p).all() for p in params.values()):
        bad.append('non-finite weights after the step')
    step_skipped = getattr(wrapper, 'loss_scaler', None) is not None and \
        not moved  # fp16's scaler skipping an overflowing first step
    if not moved and not step_skipped:
        bad.append('no weight moved')
    if not any(n.startswith('backbone.') for n in moved) and moved:
        bad.append('the backbone did not move')
    peak = details.get('peak_memory_mib')
    return dict(status='failed' if bad else 'passed', skipped=skipped,
                details=dict(details, failures=bad),
                summary=f'{what} at {height}x{width}: loss '
                f'{losses.get("loss", next(iter(losses.values()))):.3f}' +
                (f', peak {peak:.0f} MiB' if peak else ''))


WORKERS = dict(environment=worker_environment, reference=worker_reference,
               triton=worker_triton, amp=worker_amp, detector=worker_detector)


# ----------------------------------------------------------------------------
# The main process
# ----------------------------------------------------------------------------
class Log:

    def __init__(self, path):
        self.file = open(path, 'a', buffering=1)

    def say(self, text):
        print(text, flush=True)
        self.file.write(text + '\n')


def wheel_modules(wheel):
    """The top-level modules a wheel installs."""
    names = set()
    with zipfile.ZipFile(wheel) as z:
        for entry in z.namelist():
            top = entry.split('/')[0]
            if top.endswith(('.dist-info', '.data', '.libs', '.pth')):
                continue
            name = top.split('.')[0]
            if name.isidentifier():
                names.add(name)
    return sorted(names)


def install_wheels(wheels, site, log):
    """Install the wheels whose modules are missing into ``site``."""
    wheels = sorted(Path(wheels).glob('*.whl')) if wheels else []
    needed = [w for w in wheels if not all(
        importlib.util.find_spec(m) for m in wheel_modules(w))]
    if not needed:
        if wheels:
            log.say(f'[gpu-check] every wheel of {wheels[0].parent} is '
                    'installed already')
        return []
    log.say(f'[gpu-check] installing {len(needed)} wheels into {site}: ' +
            ' '.join(w.name.split('-')[0] for w in needed))
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-index',
         '--no-deps', '--no-compile', '--no-cache-dir', '--upgrade',
         '--disable-pip-version-check', '--target', str(site)] +
        [str(w) for w in needed], capture_output=True, text=True)
    log.file.write(result.stdout + result.stderr)
    if result.returncode:
        raise SystemExit(f'[gpu-check] pip install failed:\n{result.stderr}')
    return [w.name for w in needed]


def commit_of(root):
    try:
        head = subprocess.run(['git', '-C', str(root), 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ['git', '-C', str(root), 'status', '--porcelain',
             '--untracked-files=no'], capture_output=True, text=True)
        return head.stdout.strip()[:12], bool(dirty.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get('DWNET_COMMIT', 'unknown (no git here)'), None


def run_process(cmd, env, limit, log, name):
    """Run ``cmd`` with its output into the log; (return code, seconds,
    timed out)."""
    start = time.perf_counter()
    log.file.write(f'\n===== {name}: {" ".join(cmd)}\n')
    log.file.flush()
    try:
        code = subprocess.run(cmd, env=env, cwd=ROOT, stdout=log.file,
                              stderr=subprocess.STDOUT,
                              timeout=limit).returncode
        timed_out = False
    except subprocess.TimeoutExpired:
        code, timed_out = None, True
    return code, time.perf_counter() - start, timed_out


def run_worker(name, args, env, limit, log, scratch, mmcv_reason='',
               **extra_env):
    result_path = scratch / f'{name}.json'
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', name,
           '--device', args.device, '--scratch', str(scratch),
           '--mmcv-reason', mmcv_reason]
    code, seconds, timed_out = run_process(cmd, dict(env, **extra_env),
                                           limit, log, name)
    if timed_out:
        return dict(status='failed', seconds=seconds,
                    summary=f'timed out after {limit} s', error='timeout')
    if not result_path.exists():
        return dict(status='failed', seconds=seconds, summary='the worker '
                    f'ended ({code}) without a result: see gpu_check.log',
                    error=tail_of_log(log))
    result = json.loads(result_path.read_text())
    result['seconds'] = seconds
    return result


def tail_of_log(log, chars=2000):
    log.file.flush()
    text = Path(log.file.name).read_text(errors='replace')
    return text[-chars:]


def worker_main(args):
    """Run one worker; its result (or its error) goes to a JSON file."""
    out = Path(args.scratch) / f'{args.worker}.json'
    try:
        result = WORKERS[args.worker](args)
    except Exception as e:  # noqa: BLE001 (the section fails, with why)
        import traceback
        traceback.print_exc()
        result = dict(status='failed', summary=f'{type(e).__name__}: '
                      f'{str(e)[:300]}', error=traceback.format_exc()[-3000:])
    out.write_text(json.dumps(result, indent=1, default=str))
    return 0


def run_benchmark(args, env, limit, log, out):
    """tools/analysis/benchmark.py for fp32 and bf16."""
    cuda = args.device == 'cuda'
    common = ['--batch-size', '128', '--repeats', '5', '--warmup', '2',
              '--gemm-size', '8192'] if cuda else [
                  '--batch-size', '2', '--size', '64', '--repeats', '1',
                  '--warmup', '0', '--gemm-size', '128', '--no-memory',
                  '--threads', str(min(2, os.cpu_count() or 1)),
                  '--models', *CPU_BENCHMARK_MODELS, '--forms', 'train']
    runs, results, failures = {}, {}, []
    start = time.perf_counter()
    for dtype in ('fp32', 'bf16') if cuda else ('fp32', ):
        path = out / f'benchmark_{dtype}.json'
        path.unlink(missing_ok=True)
        cmd = [sys.executable, 'tools/analysis/benchmark.py', '--device',
               args.device, '--dtype', dtype, '--out', str(path)] + common
        runs[dtype] = ' '.join(['python'] + cmd[1:]).replace(str(out),
                                                             args.out)
        left = limit - (time.perf_counter() - start)
        code, _, timed_out = run_process(cmd, env, max(left, 1), log,
                                         f'benchmark {dtype}')
        if timed_out or code or not path.exists():
            failures.append(f'{dtype}: ' + ('timed out' if timed_out else
                                            f'exit status {code}'))
            continue
        results[dtype] = json.loads(path.read_text())
    seconds = time.perf_counter() - start
    rows = benchmark_rows(results)
    details = dict(commands=runs, rows=rows, failures=failures)
    skipped = []
    if cuda:
        details['targets'] = target_rows(rows)
        met = sum(t['met'] for t in details['targets'])
        summary = (f'{met}/{len(details["targets"])} speed targets met '
                   '(vs Swin-T)')
    else:
        skipped.append(dict(what='timing figures and the speed targets; '
                            'the bf16 run', why='--device cpu runs the '
                            'benchmark once, tiny (fp32, batch 2, 64x64, one '
                            'round), only to keep the command working'))
        summary = f'{len(rows)} runs, tiny, not timed'
        if not failures:
            seen = {r['model'] for r in rows}
            if seen != set(CPU_BENCHMARK_MODELS):
                failures.append(f'models run: {sorted(seen)}')
    if cuda and not failures and len(rows) < 16:
        failures.append(f'only {len(rows)} rows')
    return dict(status='failed' if failures else 'passed', seconds=seconds,
                summary=summary if not failures else '; '.join(failures),
                details=details, skipped=skipped)


def benchmark_rows(results):
    """One row per (model, form, mode, dtype)."""
    rows = []
    for dtype, result in results.items():
        for r in result['results']:
            rows.append(dict(model=r['model'], form=r['form'], mode=r['mode'],
                             dtype=dtype, img_per_s=r['img_per_s'],
                             vs_swin_t=r['vs_swin_t'],
                             peak_memory_mib=r['peak_memory_mib']))
    return rows


def target_rows(rows):
    targets = []
    for r in rows:
        if r['model'] in TARGETS and r['vs_swin_t'] is not None:
            goal = TARGETS[r['model']]
            targets.append(dict(model=r['model'], form=r['form'],
                                mode=r['mode'], dtype=r['dtype'],
                                vs_swin_t=r['vs_swin_t'], target=goal,
                                met=r['vs_swin_t'] >= goal))
    return targets


def markdown(summary):
    s = summary
    env = s['environment']
    lines = [
        f'# dwnet_mm GPU check: {"passed" if s["passed"] else "FAILED"}',
        '',
        f'- date: {s["date"]}; commit {s["commit"]}'
        + (' (with local changes)' if s.get('dirty') else ''),
        f'- device: {s["device"]}; {env.get("card", "?")}',
        f'- torch {env.get("torch")} (CUDA {env.get("cuda")}, cuDNN '
        f'{env.get("cudnn")}), Python {env.get("python")}',
        '- packages: ' + ', '.join(f'{k} {v}' for k, v in
                                   env.get('packages', {}).items()),
        f'- mmcv ops: {env.get("mmcv_ops", {}).get("reason", "?")}',
        f'- command: `{s["command"]}`; total {s["seconds"]:.0f} s',
        '',
        '| section | status | seconds | result |',
        '|---|---|---|---|',
    ]
    for name in SECTIONS:
        sec = s['sections'][name]
        lines.append(f'| {name} | {sec["status"]} | '
                     f'{sec.get("seconds", 0):.0f} | '
                     f'{sec.get("summary", "")} |')
    skips = [(name, part) for name in SECTIONS
             for part in s['sections'][name].get('skipped', [])]
    if skips:
        lines += ['', '## Skipped, and why', '']
        lines += [f'- {name}: {p["what"]}: {p["why"]}' for name, p in skips]
    for name in SECTIONS:
        sec = s['sections'][name]
        details = sec.get('details') or {}
        lines += ['', f'## {name}', '']
        if sec.get('error') and sec['status'] == 'failed':
            lines += ['```', sec['error'][-1500:], '```']
        for failure in details.get('failures', []):
            lines.append(f'- FAILED: {failure}')
        if 'tests' in details:
            lines += ['| tests | passed | failed | skipped |',
                      '|---|---|---|---|']
            for group, c in details['tests'].items():
                lines.append(f'| {group} | {c.get("passed", 0)} | '
                             f'{c.get("failed", 0)} | {c.get("skipped", 0)} |')
            for skip in details.get('skipped_tests', []):
                lines.append(f'- {skip["count"]} skipped: {skip["why"]}')
        if details.get('dtype_checks'):
            lines += ['', '| inputs | shape (B, C, G, H, W, k) | Triton out '
                      '/ grad_x / grad_w vs fp64 | PyTorch form vs fp64 | '
                      'tolerance |', '|---|---|---|---|---|']
            for r in details['dtype_checks']:
                lines.append(
                    f'| {r["dtype"]} | {r["shape"]} | ' + ' / '.join(
                        f'{r["triton_" + p]:.1e}' for p in
                        ('out', 'grad_x', 'grad_w')) + ' | ' + ' / '.join(
                        f'{r["pytorch_" + p]:.1e}' for p in
                        ('out', 'grad_x', 'grad_w')) +
                    f' | {r["tolerance"]:.0e} |')
        if details.get('steps'):
            lines += ['| conv type | precision | optim wrapper | loss | vs '
                      'fp32 (tolerance) | finite | weights updated |',
                      '|---|---|---|---|---|---|---|']
            for r in details['steps']:
                versus = f'{r["loss_vs_fp32"]:.1e} ({r["tolerance"]:.0e})' \
                    if 'loss_vs_fp32' in r else '-'
                lines.append(f'| {r["conv_type"]} | {r["precision"]} | '
                             f'{r["wrapper"]} | {r["loss"]:.5f} | {versus} | '
                             f'{r["finite"]} | {r["params_updated"]} |')
        if name == 'benchmark' and details.get('rows'):
            lines += benchmark_markdown(details, s['device'])
        if name == 'detector' and details.get('losses'):
            lines.append(f'- {details["step"]}, {details["size"][0]}x'
                         f'{details["size"][1]}, {details["optim_wrapper"]}'
                         + (f', peak memory {details["peak_memory_mib"]:.0f}'
                            ' MiB' if 'peak_memory_mib' in details else ''))
            lines.append('- losses: ' + ', '.join(
                f'{k} {v:.4f}' for k, v in details['losses'].items()))
    return '\n'.join(lines) + '\n'


def benchmark_markdown(details, device):
    lines = [f'- `{c}`' for c in details['commands'].values()]
    if device != 'cuda':
        lines.append('- ran tiny on the CPU: ' + ', '.join(sorted(
            {f'{r["model"]} ({r["form"]}, {r["mode"]}, {r["dtype"]})'
             for r in details['rows']})))
        return lines
    lines += ['', '| model | form | mode | fp32 img/s | vs Swin-T | peak MiB |'
              ' bf16 img/s | vs Swin-T | peak MiB |',
              '|---|---|---|---|---|---|---|---|---|']
    table = defaultdict(dict)
    for r in details['rows']:
        table[(r['model'], r['form'], r['mode'])][r['dtype']] = r
    for (model, form, mode), by_dtype in table.items():
        cells = []
        for dtype in ('fp32', 'bf16'):
            r = by_dtype.get(dtype)
            cells += ['-'] * 3 if r is None else [
                f'{r["img_per_s"]:.0f}',
                f'{r["vs_swin_t"]:.2f}x' if r['vs_swin_t'] else '-',
                f'{r["peak_memory_mib"]:.0f}' if r['peak_memory_mib']
                else '-']
        lines.append(f'| {model} | {form} | {mode} | ' + ' | '.join(cells) +
                     ' |')
    if details.get('targets'):
        lines += ['', '| target (issue #36) | form | mode | dtype | vs Swin-T '
                  '| met |', '|---|---|---|---|---|---|']
        for t in details['targets']:
            lines.append(f'| {t["model"]} >= {t["target"]}x | {t["form"]} | '
                         f'{t["mode"]} | {t["dtype"]} | {t["vs_swin_t"]:.2f}x'
                         f' | {"yes" if t["met"] else "no"} |')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 2)[2])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--out', default='results/gpu_check',
                        help='folder of summary.json, summary.md, the log '
                        'and the benchmark JSONs (relative: to the repo)')
    parser.add_argument('--wheels', default=str(ROOT / '.wheels'),
                        help='wheels to install where their modules are '
                        'missing (tools/prepare_gpu_wheels.sh)')
    parser.add_argument('--site', default=str(ROOT / '.gpu_site'),
                        help='where those wheels are installed')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS,
                        default=list(SECTIONS))
    parser.add_argument('--without-mmcv-ops', action='store_true',
                        help="run as if mmcv had no compiled ops (what "
                        'mmcv-lite gives)')
    # Internal: one section in its own process.
    parser.add_argument('--worker', choices=tuple(WORKERS),
                        help=argparse.SUPPRESS)
    parser.add_argument('--scratch', help=argparse.SUPPRESS)
    parser.add_argument('--mmcv-reason', default='', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)

    started = time.perf_counter()
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    # The workers' results and JUnit files stay out of --out: a lent
    # machine sends back at most 8 files.
    scratch_dir = tempfile.TemporaryDirectory(prefix='gpu_check_')
    scratch = Path(scratch_dir.name)
    (out / 'gpu_check.log').unlink(missing_ok=True)
    log = Log(out / 'gpu_check.log')
    command = 'tools/gpu_check.sh ' + ' '.join(argv if argv is not None
                                               else sys.argv[1:])
    log.say(f'[gpu-check] {command.strip()} -> {out}')
    installed = install_wheels(args.wheels, Path(args.site), log)

    env = dict(os.environ)
    paths = ([args.site] if installed else []) + [str(ROOT)]
    env['PYTHONPATH'] = os.pathsep.join(
        paths + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                 if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.setdefault('TORCH_EXTENSIONS_DIR', str(ROOT / '.torch_ext'))
    triton_env = {}
    if args.device == 'cuda':
        # dwnet_mm's native kernels are the CPU's; not built on the GPU
        # machine (a minute of its time).
        env['DWNET_MM_NATIVE'] = '0'
    else:
        # The triton section's kernels run on CPU tensors in Triton's
        # interpreter (set before triton is imported; only there: elsewhere
        # it would take the I-Dynamic layers off the native kernels).
        triton_env['TRITON_INTERPRET'] = '1'
    if args.without_mmcv_ops:
        env[NO_MMCV_OPS] = '1'
    limits = LIMITS[args.device]

    environment = run_worker('environment', args, env, limits['environment'],
                             log, scratch)
    if environment.get('status') == 'failed':
        log.say(f'[gpu-check] environment: {environment["summary"]}')
        environment = dict(environment, mmcv_ops=dict(
            available=False, reason='unknown: the environment probe failed'))
    mmcv_ops = environment.get('mmcv_ops', {})
    if not mmcv_ops.get('available'):
        env[NO_MMCV_OPS] = '1'
    log.say(f'[gpu-check] {environment.get("card", "?")}; torch '
            f'{environment.get("torch")}; {mmcv_ops.get("reason")}')
    sections = {}
    for name in SECTIONS:
        if name not in args.sections:
            sections[name] = dict(status='skipped', seconds=0,
                                  summary='not asked for (--sections)',
                                  skipped=[dict(what=name,
                                                why='not in --sections')])
        elif name == 'benchmark':
            sections[name] = run_benchmark(args, env, limits[name], log, out)
        else:
            sections[name] = run_worker(
                name, args, env, limits[name], log, scratch,
                mmcv_ops.get('reason', ''),
                **(triton_env if name == 'triton' else {}))
        sec = sections[name]
        log.say(f'[gpu-check] {name}: {sec["status"]} in '
                f'{sec.get("seconds", 0):.0f} s: {sec.get("summary", "")}')
    commit, dirty = commit_of(ROOT)
    summary = dict(
        check='dwnet_mm tools/gpu_check.sh', command=command.strip(),
        date=datetime.datetime.now(datetime.timezone.utc).strftime(
            '%Y-%m-%d %H:%M UTC'),
        commit=commit, dirty=dirty, device=args.device,
        installed_wheels=installed, environment=environment,
        sections=sections, seconds=time.perf_counter() - started,
        passed=all(sections[n]['status'] != 'failed' for n in SECTIONS))
    (out / 'summary.json').write_text(
        json.dumps(summary, indent=1, default=str))
    (out / 'summary.md').write_text(markdown(summary))
    log.say(f'[gpu-check] {"passed" if summary["passed"] else "FAILED"} in '
            f'{summary["seconds"]:.0f} s: {out / "summary.md"}')
    return 0 if summary['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
