import os.path as osp
import shutil

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
# ONNX export (tools/deployment/pytorch2onnx.py) and its ONNX Runtime check.
extras['deploy'] = ['onnx', 'onnxruntime']
extras['tests'] = extras['all'] + extras['deploy'] + ['pytest>=7']

setup(
    name='dwnet-mm',
    version=get_version(),
    description='DWNet (ICLR 2022) depth-wise convolution backbones for '
    'mmpretrain, mmdet and mmsegmentation',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['dwnet_mm', 'dwnet_mm.*']),
    # The C++ sources are compiled on first use (dwnet_mm/ops/native.py).
    package_data={'dwnet_mm.ops': ['csrc/*.cpp', 'csrc/*.h']},
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
    cmdclass={'build_py': BuildPyWithModelIndex},
    zip_safe=False,
)
