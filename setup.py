import glob
import os
import os.path as osp
import platform
import shutil
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# mmpretrain's model index and the configs it names travel in the wheel
# under dwnet_mm/.mim/, as OpenMMLab packages ship theirs, so that an
# installed dwnet_mm knows its models by name (dwnet_mm/utils/model_index.py).
# A checkout or an editable install reads them from the repository root.
MIM_FILES = ('model-index.yml', 'configs')
HERE = osp.dirname(osp.abspath(__file__))


class BuildPyWithModelIndex(build_py):
    """build_py that also copies :data:`MIM_FILES` into dwnet_mm/.mim."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim = osp.join(self.build_lib, 'dwnet_mm', '.mim')
        for name in MIM_FILES:
            src, dst = osp.join(HERE, name), osp.join(mim, name)
            if osp.isdir(src):
                shutil.copytree(
                    src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                self.mkpath(mim)
                self.copy_file(src, dst)


def native_extension():
    """The CPU kernels (dwnet_mm/ops/csrc) as ``dwnet_mm._ext``, compiled
    by torch's extension builder, as mmcv builds its ops; ([], None) where
    they cannot be built here (no torch in the build environment, not an
    x86-64 CPU, or ``DWNET_MM_NATIVE=0``): the layers then run on PyTorch
    ops."""
    if os.environ.get('DWNET_MM_NATIVE', '1').strip() == '0' or \
            platform.machine().lower() not in ('x86_64', 'amd64'):
        return [], None
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        warnings.warn('dwnet_mm: torch is not importable while building, so '
                      'its CPU kernels are not compiled (build with '
                      '--no-build-isolation)')
        return [], None

    class OptionalBuildExtension(BuildExtension):
        """A failed compile leaves an installable package without the
        kernels (dwnet_mm.ops then warns once and uses PyTorch ops)."""

        def run(self):
            try:
                super().run()
            except Exception as error:  # a missing compiler or header
                warnings.warn(
                    f'dwnet_mm: could not build its CPU kernels ({error}); '
                    'installing without them: the layers run on PyTorch ops')

    # at::parallel_for runs its loop serially in code compiled without
    # OpenMP; linked with it, the kernels join torch's libgomp.
    openmp = ['-fopenmp'] if platform.system() == 'Linux' else []
    sources = sorted(glob.glob('dwnet_mm/ops/csrc/*.cpp'))
    extension = CppExtension(
        'dwnet_mm._ext', sources,
        extra_compile_args=['-O3', '-g0'] + openmp,
        extra_link_args=openmp)
    return [extension], OptionalBuildExtension.with_options(use_ninja=True)


EXT_MODULES, BUILD_EXT = native_extension()
CMDCLASS = {'build_py': BuildPyWithModelIndex}
if BUILD_EXT is not None:
    CMDCLASS['build_ext'] = BUILD_EXT


def get_version():
    scope = {}
    with open('dwnet_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


extras = {
    'cls': ['mmpretrain>=1.2.0,<2'],
    'det': ['mmdet>=3.3.0,<3.4'],
    'seg': ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
}
extras['all'] = sorted({req for reqs in extras.values() for req in reqs})
# ONNX export (tools/export/pytorch2onnx.py) and its ONNX Runtime check.
extras['export'] = ['onnx', 'onnxruntime']
extras['tests'] = extras['all'] + extras['export'] + [
    'pytest>=7', 'pytest-xdist', 'flake8']

setup(
    name='dwnet-mm',
    version=get_version(),
    description='DWNet (ICLR 2022) depth-wise convolution backbones for '
    'mmpretrain, mmdet and mmsegmentation',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['dwnet_mm', 'dwnet_mm.*']),
    ext_modules=EXT_MODULES,
    python_requires='>=3.8',
    # torch 2.4 is the first with what the code calls:
    # torch.is_autocast_enabled(device_type), torch.get_autocast_dtype and
    # torch.amp.custom_fwd/custom_bwd(device_type=...) (2.4), the configs'
    # fused AdamW on the CPU (2.4; 2.3 and earlier raise), and
    # torch.compiler.is_compiling (2.3). mmcv: the mmcv.cnn bricks of 2.0.
    # mmengine: the code needs nothing newer than 0.8 (mmengine.analysis,
    # DefaultScope); the floor stays at the 0.10 series, the one run with
    # torch >= 2.4 (0.10.7).
    # Tested: requirements/constraints.txt (see the README).
    install_requires=[
        'torch>=2.4',
        'mmengine>=0.10.0,<1.0',
        'mmcv>=2.0.0,<2.2.0',
        'numpy',
        # Weights in a format that cannot run code when read.
        'safetensors>=0.4',
    ],
    extras_require=extras,
    cmdclass=CMDCLASS,
    zip_safe=False,
)
