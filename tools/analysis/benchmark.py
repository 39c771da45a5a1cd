"""Throughput and peak memory of DWNet classifiers beside Swin-T/ConvNeXt-T.

All models run interleaved in one process. Inference and training steps
run in two phases (a training step frees hundreds of MiB, which would slow
the inference step after it); in each phase every round times the GEMM peak
(large square matmuls) and then each model once, in a new random order each
round (seeded), so that no model always runs after the same one. Ratios to
Swin-T and shares of the GEMM peak are taken within each round and the
report gives their medians, so that slow phases of a shared machine cancel
out; img/s is the median over rounds.

    python tools/analysis/benchmark.py                       # everything
    python tools/analysis/benchmark.py --deploy              # deploy, infer
    python tools/analysis/benchmark.py --threads 2 --repeats 7 \\
        --layer-memory --out benchmark.json                  # quiet machine
    python tools/analysis/benchmark.py --threads 1 --timer cpu  # busy one
    python tools/analysis/benchmark.py --device cuda --batch-size 128 \\
        --dtype bf16 --cudnn-benchmark                       # a GPU, AMP

DWNet's depth-wise convs run in dwnet_mm's native CPU kernels where they
can, and on a GPU its I-Dynamic conv in a Triton kernel (see
``dwnet_mm/ops``); ``--pytorch-ops`` adds a twin of every DWNet run that
uses PyTorch's ops instead (:func:`dwnet_mm.ops.pytorch_ops` around its
steps), so the
kernels' gain is measured in the same rounds. ``--runtimes onnxruntime
openvino`` adds, for every DWNet inference run on the CPU, the same model
(same form, same weights) exported to ONNX
(``dwnet_mm.export.export_onnx``, opset 17) and run in ONNX Runtime
and/or OpenVINO with the same thread count, as peers in the same rounds
(their peak memory is not a torch allocation: shown as ``-``).

Training step: forward, cross-entropy, backward and a step of PyTorch's
AdamW, fused by default as the configs set it (``--adamw`` picks another
implementation, for every model alike).

Forms: ``train`` is the model as trained (BatchNorm layers, eval mode for
inference); ``deploy`` is ``DWNet.switch_to_deploy()`` (BatchNorm folded,
NHWC blocks). Swin-T and ConvNeXt-T (mmpretrain) have the ``train`` form
only.

Page faults: the process's minor page faults during each timed step (each
a first touch of memory the C library had just taken from the kernel),
median over rounds. With glibc's default malloc, freed blocks above its
mmap threshold, and free memory at the top of its heap, go back to the
kernel, so a step that allocates large tensors pays a fault per 4 KiB page
of them on every call. ``--malloc keep`` sets glibc's ``mallopt`` so that
the process keeps the memory it frees (no mmap blocks, no heap trimming),
the effect of the caching allocators (jemalloc, tcmalloc) that PyTorch's
CPU launcher (``torch.backends.xeon.run_cpu``) preloads; it applies to all
models alike. It is for comparing models, not for long runs: glibc does not
always fit an aligned large block back into a freed one, so the heap can
grow.

Peak memory: the most memory held by tensors during one step above what was
held before it (parameters, optimizer state, the input). On CUDA it is read
from ``torch.cuda.max_memory_allocated``; on the CPU it is the running sum
of the allocation and free events that ``torch.profiler`` records with
``profile_memory=True`` (each tensor allocation of PyTorch's CPU allocator),
so it does not depend on the C library's allocator or on process RSS. The
memory step runs after the timing, outside it.
"""
import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from copy import deepcopy

import torch
import torch.nn.functional as F

DWNET_MODELS = {
    'dwnet_tiny': ('DWNet-T', dict(conv_type='static')),
    'dynamic_dwnet_tiny': ('D-DWNet-T', dict(conv_type='dynamic')),
    'i_dynamic_dwnet_tiny': ('I-Dynamic-T', dict(conv_type='i_dynamic')),
    'dwnet_base': ('DWNet-B', dict(arch='base', conv_type='static')),
    'dynamic_dwnet_base': ('D-DWNet-B',
                           dict(arch='base', conv_type='dynamic')),
    'i_dynamic_dwnet_base': ('I-Dynamic-B',
                             dict(arch='base', conv_type='i_dynamic')),
}
REFERENCE_MODELS = {
    'swin_tiny': 'Swin-T',
    'convnext_tiny': 'ConvNeXt-T',
}
ALL_MODELS = list(DWNET_MODELS) + list(REFERENCE_MODELS)
DEFAULT_MODELS = [
    'dwnet_tiny', 'dynamic_dwnet_tiny', 'i_dynamic_dwnet_tiny', 'swin_tiny',
    'convnext_tiny'
]
FORMS = ('train', 'deploy')
# torch.optim.AdamW's keyword for each implementation.
ADAMW_IMPLEMENTATIONS = {
    'fused': dict(fused=True),
    'foreach': dict(foreach=True),
    'for-loop': dict(foreach=False, fused=False),
}
BASELINE = 'swin_tiny'
# --dtype: the autocast dtype (None: fp32, no autocast).
DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=ALL_MODELS,
                        default=DEFAULT_MODELS)
    parser.add_argument('--forms', nargs='+', choices=FORMS,
                        default=['train', 'deploy'],
                        help='forms of the DWNet models')
    parser.add_argument('--deploy', action='store_true',
                        help='shortcut for --forms deploy --modes infer')
    parser.add_argument('--modes', nargs='+', choices=('infer', 'train'),
                        default=['infer', 'train'],
                        help='inference and/or training step (training '
                        'runs the train form only)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=224, help='input size')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch\'s choice)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='round-robin rounds; the median is reported')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps per model before the rounds')
    parser.add_argument('--timer', choices=('wall', 'cpu'), default='wall',
                        help='wall clock, or the CPU time of the main '
                        'thread: on a busy machine, --threads 1 --timer cpu '
                        'compares models without the scheduling noise '
                        '(CPU only; counts no time spent in other threads)')
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--gemm-size', type=int, default=2048,
                        help='size of the square matmuls of the GEMM peak')
    parser.add_argument('--pytorch-ops', action='store_true',
                        help='also run every DWNet model with PyTorch ops '
                        "instead of dwnet_mm's kernels (native CPU kernels; "
                        'on a GPU the Triton I-Dynamic kernel), side by side')
    parser.add_argument('--runtimes', nargs='+', default=[],
                        choices=tuple(EXPORT_RUNTIMES),
                        help='add each DWNet inference run exported to ONNX '
                        'and run in these runtimes (CPU; pip install '
                        '"dwnet-mm[export]" for onnxruntime, openvino '
                        'separately)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak memory steps')
    parser.add_argument('--layer-memory', action='store_true',
                        help='also compare the peak memory of the static '
                        'and the i_dynamic DW layer (first block of each '
                        'stage, inference)')
    parser.add_argument('--malloc', choices=('system', 'keep'),
                        default='system',
                        help="the C library's allocator as it is, or glibc "
                        'set to keep the memory it frees (see above)')
    parser.add_argument('--adamw', choices=ADAMW_IMPLEMENTATIONS,
                        default='fused',
                        help="PyTorch's AdamW implementation in the "
                        'training step, for every model alike: fused (one '
                        'kernel over all parameters, as the configs set), '
                        'foreach, or for-loop (the CPU default)')
    parser.add_argument('--dtype', choices=tuple(DTYPES), default='fp32',
                        help='fp32, or mixed precision: every step under '
                        'torch.autocast in bf16 or fp16 (an fp16 training '
                        'step scales the loss with a GradScaler, as '
                        "mmengine's AmpOptimWrapper does); the GEMM peak "
                        'then multiplies in that dtype')
    parser.add_argument('--cudnn-benchmark', action='store_true',
                        help='let cuDNN time its algorithms for each shape '
                        "(mmengine's env_cfg cudnn_benchmark=True)")
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args(argv)
    if args.deploy:
        args.forms, args.modes = ['deploy'], ['infer']
    device_type = torch.device(args.device).type
    if args.timer == 'cpu' and device_type != 'cpu':
        parser.error('--timer cpu needs --device cpu')
    if args.cudnn_benchmark and device_type != 'cuda':
        parser.error('--cudnn-benchmark needs a cuda --device')
    return args


def keep_freed_memory():
    """Set glibc's malloc to keep freed memory in the process: no mmap
    blocks (``M_MMAP_MAX`` 0) and no heap trimming (``M_TRIM_THRESHOLD``
    2 GiB)."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, 'gnu_get_libc_version'):
        sys.exit('--malloc keep needs glibc (Linux); this C library has no '
                 'mallopt to set. Preload jemalloc or tcmalloc instead, or '
                 'leave out --malloc')
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    if not (libc.mallopt(M_MMAP_MAX, 0)
            and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        sys.exit('glibc refused the mallopt settings of --malloc keep')


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ---------------------------------------------------------------- models --
def build_classifier(name, form='train'):
    """An mmpretrain ImageClassifier for ``name`` in ``form``."""
    import mmpretrain.models  # noqa: F401 (registers the models)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import dwnet_mm  # noqa: F401 (registers DWNet)
    head = dict(type='LinearClsHead', num_classes=1000, in_channels=768)
    if name in DWNET_MODELS:
        kwargs = dict(arch='tiny', drop_path_rate=0.2,
                      out_type='avg_featmap', out_indices=-1)
        kwargs.update(DWNET_MODELS[name][1])
        if kwargs['arch'] == 'base':
            kwargs['drop_path_rate'] = 0.5
            head['in_channels'] = 1024
        cfg = dict(backbone=dict(type='DWNet', **kwargs), neck=None)
    elif name == 'swin_tiny':
        cfg = dict(
            backbone=dict(type='SwinTransformer', arch='tiny', img_size=224,
                          drop_path_rate=0.2, pad_small_map=True),
            neck=dict(type='GlobalAveragePooling'))
    elif name == 'convnext_tiny':
        cfg = dict(
            backbone=dict(type='ConvNeXt', arch='tiny', drop_path_rate=0.1),
            neck=None)
    else:
        raise ValueError(f'unknown model {name!r}')
    # Default initialisation: init_weights only changes values (and logs).
    # Explicit scope: another framework may be the current default scope.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(type='ImageClassifier', head=head, **cfg))
    if form != 'train':
        if name not in DWNET_MODELS:
            raise ValueError(f'{name} has no {form} form')
        model.backbone.switch_to_deploy()
    return model


def count_macs(model, size):
    """Multiply-accumulates of one image (mmengine's FlopAnalyzer with
    dwnet_mm's FLOP handles)."""
    from dwnet_mm.utils import flop_analyzer
    model = deepcopy(model).cpu().eval()
    with torch.no_grad():
        return flop_analyzer(_TensorMode(model),
                             torch.randn(1, 3, size, size)).total()


class _TensorMode(torch.nn.Module):

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


# ----------------------------------------------------------------- steps --
class Entry:
    """One timed model: a name, a form, a mode and its step function."""

    runtime = 'torch'

    def __init__(self, name, form, mode, model, inputs, labels, device,
                 timer=time.perf_counter, native=True, adamw='fused',
                 dtype='fp32'):
        self.name, self.form, self.mode = name, form, mode
        self.native = native
        self.timer = timer
        self.model, self.inputs, self.labels = model, inputs, labels
        self.device = device
        self.device_type = torch.device(device).type
        self.autocast_dtype = DTYPES[dtype]
        self.scaler = torch.amp.GradScaler(self.device_type) \
            if mode == 'train' and dtype == 'fp16' else None
        self.times = []
        self.faults = []  # minor page faults of each timed step
        self.gemm_rates = []  # the GEMM peak of each timed round
        self.optimizer = None
        if mode == 'train':
            model.train()
            self.optimizer = torch.optim.AdamW(
                model.parameters(), lr=1e-4, weight_decay=0.05,
                **ADAMW_IMPLEMENTATIONS[adamw])
        else:
            model.eval()

    @property
    def label(self):
        base = DWNET_MODELS[self.name][0] if self.name in DWNET_MODELS \
            else REFERENCE_MODELS[self.name]
        notes = [self.form] if self.form != 'train' else []
        if not self.native:
            notes.append('PyTorch ops')
        return f'{base} ({", ".join(notes)})' if notes else base

    @property
    def key(self):
        return self.name, self.form, self.mode, self.native

    def step(self):
        if self.native:
            return self._step()
        with pytorch_ops():
            return self._step()

    def _step(self):
        autocast = torch.autocast(self.device_type, dtype=self.autocast_dtype,
                                  enabled=self.autocast_dtype is not None)
        if self.mode == 'infer':
            with torch.no_grad(), autocast:
                self.model(self.inputs, mode='tensor')
            return
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = self.model(self.inputs, mode='tensor')
            loss = F.cross_entropy(logits, self.labels)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def timed_step(self):
        synchronize(self.device)
        faults = minor_faults()
        start = self.timer()
        self.step()
        synchronize(self.device)
        self.times.append(self.timer() - start)
        self.faults.append(minor_faults() - faults)


def openvino_runner(path, threads):
    """A function running the ONNX file ``path`` in OpenVINO (CPU)."""
    import openvino
    # fp32 as the other runs: on CPUs with bf16 units OpenVINO would
    # otherwise compute in bf16 (a 1e-2 relative error here).
    compiled = openvino.Core().compile_model(
        path, 'CPU', {'INFERENCE_NUM_THREADS': threads,
                      'INFERENCE_PRECISION_HINT': 'f32'})
    return lambda x: list(compiled(x.numpy()).values())


def onnxruntime_runner(path, threads):
    """A function running the ONNX file ``path`` in ONNX Runtime (CPU)."""
    from dwnet_mm.export import onnxruntime_session, run_onnxruntime
    session = onnxruntime_session(path, threads=threads)
    return lambda x: run_onnxruntime(session, x)


EXPORT_RUNTIMES = {
    'onnxruntime': ('ONNX Runtime', onnxruntime_runner),
    'openvino': ('OpenVINO', openvino_runner),
}


class ExportedEntry(Entry):
    """An inference Entry whose model runs exported to ONNX, in another
    runtime (``EXPORT_RUNTIMES``), on the same input and thread count."""

    def __init__(self, entry, runtime, folder, threads):
        from dwnet_mm.export import export_onnx
        super().__init__(entry.name, entry.form, 'infer', entry.model,
                         entry.inputs, None, entry.device, entry.timer)
        self.runtime = runtime
        path = os.path.join(folder, f'{entry.name}_{entry.form}.onnx')
        if not os.path.exists(path):
            export_onnx(_TensorMode(deepcopy(entry.model)), entry.inputs,
                        path)
        self.run = EXPORT_RUNTIMES[runtime][1](path, threads)

    @property
    def label(self):
        label, runtime = super().label, EXPORT_RUNTIMES[self.runtime][0]
        if label.endswith(')'):
            return f'{label[:-1]}, {runtime})'
        return f'{label} ({runtime})'

    @property
    def key(self):
        return super().key + (self.runtime, )

    def step(self):
        self.run(self.inputs)


def pytorch_ops():
    """Run dwnet_mm's layers on PyTorch ops, not its native CPU kernels or
    its Triton kernel (:func:`dwnet_mm.ops.pytorch_ops`)."""
    from dwnet_mm.ops import pytorch_ops
    return pytorch_ops()


def synchronize(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


class GemmPeak:
    """Large square matmuls: the machine's practical MAC/s peak in a dtype
    (``--dtype``; fp32 by default), PyTorch's ``torch.mm`` (MKL on x86)."""

    def __init__(self, size, device, count=3, timer=time.perf_counter,
                 dtype='fp32'):
        self.timer = timer
        self.dtype = dtype
        torch_dtype = DTYPES[dtype] or torch.float32
        self.a = torch.randn(size, size, device=device, dtype=torch_dtype)
        self.b = torch.randn(size, size, device=device, dtype=torch_dtype)
        self.out = torch.empty(size, size, device=device, dtype=torch_dtype)
        self.macs = size**3 * count
        self.count = count
        self.device = device
        self.rates = []

    def run(self):
        """Time one round; returns (and records) the MAC/s."""
        torch.mm(self.a, self.b, out=self.out)  # warm caches and threads
        synchronize(self.device)
        start = self.timer()
        for _ in range(self.count):
            torch.mm(self.a, self.b, out=self.out)
        synchronize(self.device)
        self.rates.append(self.macs / (self.timer() - start))
        return self.rates[-1]


def peak_memory(entry):
    """Peak bytes held by tensors during one step, above the start."""
    if str(entry.device).startswith('cuda'):
        synchronize(entry.device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        entry.step()
        synchronize(entry.device)
        return torch.cuda.max_memory_allocated() - before
    return cpu_peak_memory(entry.step)


@contextlib.contextmanager
def _native_stderr_muted():
    """The profiler's C++ side prints start/stop lines to fd 2 on every
    use; they would bury the report."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_memory(fn):
    """Peak of the running sum of CPU tensor allocations during ``fn()``,
    from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile
    with _native_stderr_muted(), profile(activities=[ProfilerActivity.CPU],
                                         profile_memory=True) as prof:
        fn()
    events = [(e.start_ns(), e.nbytes())
              for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]' and e.device_type() ==
              torch.autograd.DeviceType.CPU]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


def layer_memory(batch_size, size, device):
    """Peak inference memory of the DW layer (the mixer) and of the whole
    block, first block of each stage: static vs i_dynamic."""
    import dwnet_mm  # noqa: F401
    from dwnet_mm.models import DWNet
    rows = []
    models = {}
    for conv_type in ('static', 'i_dynamic'):
        models[conv_type] = DWNet('tiny', conv_type=conv_type,
                                  out_type='avg_featmap', out_indices=-1).to(
            device).eval()
    for stage in range(4):
        row = dict(stage=stage)
        for conv_type, model in models.items():
            C = model.arch['channels'][stage]
            side = size // 4 // 2**stage
            x = torch.randn(batch_size, side, side, C, device=device)
            block = model.stages[stage].blocks[0]
            x_nchw = x.permute(0, 3, 1, 2)
            dblock = block.fuse().eval()
            with torch.no_grad():
                row[f'{conv_type}_mixer'] = peak_memory_fn(
                    lambda: block.mixer(x_nchw), device)
                row[f'{conv_type}_block'] = peak_memory_fn(
                    lambda: block(x), device)
                row[f'{conv_type}_deploy_block'] = peak_memory_fn(
                    lambda: dblock(x), device)
            row['input'] = x.numel() * x.element_size()
        rows.append(row)
    return rows


def peak_memory_fn(fn, device):
    if str(device).startswith('cuda'):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated() - before
    return cpu_peak_memory(fn)


# ------------------------------------------------------------ reporting --
def environment(args):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    env = dict(
        command=' '.join([sys.executable] + sys.argv),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        mkldnn=torch.backends.mkldnn.is_available(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        device=args.device,
        batch_size=args.batch_size,
        input_size=args.size,
        malloc='glibc, keeps freed memory (--malloc keep)'
        if args.malloc == 'keep' else "the C library's default",
        training_optimizer=f'torch.optim.AdamW, {args.adamw}',
        dtype='fp32' if args.dtype == 'fp32' else
        f'torch.autocast({args.dtype})' +
        (', GradScaler in training' if args.dtype == 'fp16' else ''),
    )
    from dwnet_mm.ops import native_ops
    env['dwnet_mm_native_cpu_kernels'] = native_ops() is not None
    if str(args.device).startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name()
        env['cuda'] = torch.version.cuda
        env['cudnn'] = torch.backends.cudnn.version()
        env['cudnn_benchmark'] = torch.backends.cudnn.benchmark
        # PyTorch's defaults: fp32 convs in TF32, fp32 matmuls not.
        env['tf32_convs'] = torch.backends.cudnn.allow_tf32
        env['tf32_matmuls'] = torch.backends.cuda.matmul.allow_tf32
    if hasattr(os, 'getloadavg'):
        env['load_average_start'] = os.getloadavg()
    return env


def mib(nbytes):
    return nbytes / 2**20


def report(env, entries, gemm, macs, memory, layer_rows):
    peak = statistics.median(gemm.rates)
    print('\n## Environment')
    for key, value in env.items():
        print(f'- {key}: {value}')
    print(f'- {gemm.dtype} GEMM peak ({gemm.a.shape[0]}^3 torch.mm '
          f'matmuls): median {peak / 1e9:.1f} GMAC/s, best '
          f'{max(gemm.rates) / 1e9:.1f} GMAC/s over {len(gemm.rates)} rounds')
    results = []
    for mode, title in (('infer', 'Inference'), ('train', 'Training step')):
        rows = [e for e in entries if e.mode == mode]
        if not rows:
            continue
        baseline = next((e for e in rows if e.name == BASELINE), None)
        print(f'\n## {title} (batch {env["batch_size"]}, '
              f'{env["input_size"]}x{env["input_size"]}, '
              f'median of {len(rows[0].times)} rounds)')
        print('| model | img/s | min-max img/s | vs Swin-T | GMAC/img | '
              '% GEMM peak | page faults/step | peak memory (MiB) |')
        print('|---|---|---|---|---|---|---|---|')
        for e in rows:
            rate = env['batch_size'] / statistics.median(e.times)
            spread = (env['batch_size'] / max(e.times),
                      env['batch_size'] / min(e.times))
            # Per round: this model's time over Swin-T's of the same round.
            ratio = None if baseline is None else statistics.median(
                b / t for t, b in zip(e.times, baseline.times))
            ratio_text = f'{ratio:.2f}x' if ratio else '- (no Swin-T)'
            gmacs = macs[e.name]
            # A training step is about 3x the forward MACs.
            work = gmacs * (3 if mode == 'train' else 1)
            share = 100 * statistics.median(
                work * env['batch_size'] / t / g
                for t, g in zip(e.times, e.gemm_rates))
            mem = memory.get(e.key)
            mem_text = f'{mib(mem):.0f}' if mem is not None else '-'
            faults = statistics.median(e.faults)
            print(f'| {e.label} | {rate:.2f} | {spread[0]:.2f}-'
                  f'{spread[1]:.2f} | {ratio_text} | {gmacs / 1e9:.2f} | '
                  f'{share:.0f}% | {faults / 1e3:.0f}k | {mem_text} |')
            results.append(dict(
                model=e.name, form=e.form, mode=mode, native=e.native,
                runtime=e.runtime,
                img_per_s=rate,
                times_s=e.times, vs_swin_t=ratio, gmacs=gmacs / 1e9,
                percent_gemm_peak=share, page_faults=e.faults,
                peak_memory_mib=mib(mem) if mem is not None else None))
    if layer_rows:
        print('\n## DW layer peak inference memory, first block per stage '
              '(MiB; i_dynamic / static)')
        print('| stage | input | static mixer | i_dynamic mixer | ratio | '
              'static block | i_dynamic block | deploy static block | '
              'deploy i_dynamic block | deploy ratio |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        for r in layer_rows:
            deploy_ratio = r['i_dynamic_deploy_block'] / \
                r['static_deploy_block']
            print(f'| {r["stage"]} | {mib(r["input"]):.1f} | '
                  f'{mib(r["static_mixer"]):.1f} | '
                  f'{mib(r["i_dynamic_mixer"]):.1f} | '
                  f'{r["i_dynamic_mixer"] / r["static_mixer"]:.2f} | '
                  f'{mib(r["static_block"]):.1f} | '
                  f'{mib(r["i_dynamic_block"]):.1f} | '
                  f'{mib(r["static_deploy_block"]):.1f} | '
                  f'{mib(r["i_dynamic_deploy_block"]):.1f} | '
                  f'{deploy_ratio:.2f} |')
    if hasattr(os, 'getloadavg'):
        env['load_average_end'] = os.getloadavg()
        print(f'\n- load average at the end: {env["load_average_end"]}')
    print('\nvs Swin-T: median over rounds of the ratio to Swin-T in the '
          'same round. % GEMM peak: forward MACs per image (mmengine '
          'FlopAnalyzer, training form) x img/s, x3 for a training step, '
          'over the GEMM peak of the same round, median over rounds. Page '
          'faults: minor faults of the process during a step, median. Peak '
          'memory: tensors allocated during one step above the start (see '
          '--help).')
    return dict(environment=env, gemm_peak_gmacs=peak / 1e9,
                gemm_rates=gemm.rates, results=results,
                layer_memory=layer_rows)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == 'keep':
        keep_freed_memory()
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    env = environment(args)
    timer = time.thread_time if args.timer == 'cpu' else time.perf_counter
    env['timer'] = 'main-thread CPU time' if args.timer == 'cpu' else \
        'wall clock'
    torch.manual_seed(0)
    inputs = torch.randn(args.batch_size, 3, args.size, args.size,
                         device=device)
    labels = torch.randint(0, 1000, (args.batch_size, ), device=device)

    entries, macs = [], {}
    for name in args.models:
        forms = [f for f in args.forms if name in DWNET_MODELS] or ['train']
        for form in forms:
            for mode in args.modes:
                if mode == 'train' and form != 'train':
                    continue
                model = build_classifier(name, form).to(device)
                if name not in macs:
                    macs[name] = count_macs(
                        build_classifier(name) if form != 'train' else model,
                        args.size)
                entries.append(
                    Entry(name, form, mode, model, inputs, labels, device,
                          timer, adamw=args.adamw, dtype=args.dtype))
                if args.pytorch_ops and name in DWNET_MODELS:
                    entries.append(
                        Entry(name, form, mode, deepcopy(model), inputs,
                              labels, device, timer, native=False,
                              adamw=args.adamw, dtype=args.dtype))
    if args.runtimes:
        if device.type != 'cpu':
            sys.exit('--runtimes: the CPU only (--device cpu)')
        # Removed when the process ends.
        folder = tempfile.TemporaryDirectory(prefix='benchmark_onnx_')
        entries += [
            ExportedEntry(e, runtime, folder.name, torch.get_num_threads())
            for e in list(entries) for runtime in args.runtimes
            if e.mode == 'infer' and e.native and e.name in DWNET_MODELS
        ]
    if not entries:
        sys.exit('nothing to run: check --models, --forms and --modes')
    print(f'{len(entries)} runs: ' + ', '.join(
        f'{e.label} {e.mode}' for e in entries))

    gemm = GemmPeak(args.gemm_size, device, timer=timer, dtype=args.dtype)
    for mode in args.modes:
        phase = [e for e in entries if e.mode == mode]
        for e in phase:
            for _ in range(args.warmup):
                e.step()
        # A new random order each round (seeded: runs repeat): a model
        # does not always follow the same one, whose freed memory or warm
        # caches would bias it.
        orders = random.Random(0)
        for round_index in range(args.repeats):
            rate = gemm.run()
            for e in orders.sample(phase, len(phase)):
                e.gemm_rates.append(rate)
                e.timed_step()
            print(f'{mode} round {round_index + 1}/{args.repeats}: ' +
                  ', '.join(f'{e.label} {args.batch_size / e.times[-1]:.2f}'
                            for e in phase) +
                  f', GEMM {rate / 1e9:.1f} GMAC/s', flush=True)

    memory = {}
    if not args.no_memory:
        for e in entries:
            if not isinstance(e, ExportedEntry):
                memory[e.key] = peak_memory(e)
    layer_rows = layer_memory(args.batch_size, args.size, device) \
        if args.layer_memory else None
    results = report(env, entries, gemm, macs, memory, layer_rows)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    main()
