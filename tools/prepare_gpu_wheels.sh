#!/usr/bin/env bash
# Download, here, the wheels that tools/gpu_check.sh installs on a GPU
# machine that has PyTorch but no OpenMMLab packages and no internet.
#
# The target is the lent GPU machines' image (/work/.library/device/KINDS.md
# at the time of writing): CPython 3.12 on manylinux x86-64 with torch,
# torchvision, triton, numpy, scipy, matplotlib, opencv-python-headless,
# pyyaml, rich, regex, einops, six, tqdm, packaging, pillow and pytest
# already there. Only what it lacks is fetched (--no-deps, an exact list):
# the OpenMMLab packages at the versions of requirements/constraints.txt and
# their pure-Python (or abi3/cp312) needs. mmcv comes as mmcv-lite (the same
# Python package without the compiled ops: no mmcv wheel with ops exists for
# that machine's torch); the detector's RoI ops then run nowhere and
# gpu_check.sh says so. The working tree travels to the device with the
# wheels, so dwnet_mm itself needs none.
#
# Usage: tools/prepare_gpu_wheels.sh [DIR]     (default: <repo>/.wheels)
#
# Environment:
#   PYTHON              interpreter whose pip downloads (default: python3)
#   GPU_PYTHON_VERSION  the device's Python          (default: 3.12)
#   WHEELS_MAX_MIB      size guard, MiB              (default: 48; the tree
#                       and the wheels must travel within 64 MiB)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/.wheels}
PY=${PYTHON:-python3}
PYVER=${GPU_PYTHON_VERSION:-3.12}
MAX_MIB=${WHEELS_MAX_MIB:-48}
CONSTRAINTS=$ROOT/requirements/constraints.txt

pin() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }
MMCV=$(pin mmcv)
# The versions of the tested stack; the rest are the versions these were
# checked with (importable together on Python 3.12 with numpy 2).
WHEELS=(
    "mmengine==$(pin mmengine)"
    "mmcv-lite==$MMCV"
    "mmpretrain==$(pin mmpretrain)"
    "mmdet==$(pin mmdet)"
    "mmsegmentation==$(pin mmsegmentation)"
    addict==2.4.0          # mmengine, mmcv
    yapf==0.43.0           # mmengine's Config
    platformdirs==4.3.8    # yapf
    termcolor==3.1.0       # mmengine
    pycocotools==2.0.10    # mmdet.datasets (compiled: abi3 wheel)
    shapely==2.1.1         # mmdet.structures (compiled)
    terminaltables==3.1.10 # mmdet
    prettytable==3.16.0    # mmseg
    wcwidth==0.2.13        # prettytable, ftfy
    ftfy==6.3.1            # mmseg's tokenizer (dwnet-mm[seg])
    mat4py==0.6.0          # mmpretrain
    modelindex==0.0.2      # mmpretrain (a name for model-index)
    model-index==0.1.11
    ordered-set==4.1.0     # model-index
    # mmengine's Config reads the 'mmdet::' bases through pkg_resources,
    # which newer setuptools no longer ship; installed only where missing.
    setuptools==79.0.1
)

log() { echo "[gpu-wheels] $*"; }
for spec in "${WHEELS[@]}"; do
    [[ $spec == *==?* ]] || { echo "no version for '$spec' in $CONSTRAINTS" >&2; exit 1; }
done

mkdir -p "$DEST"
# One version of each: a stale wheel of another version would make the
# install on the device fail.
rm -f "$DEST"/*.whl
log "downloading ${#WHEELS[@]} wheels for CPython $PYVER, manylinux x86-64, into $DEST"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" "${WHEELS[@]}" \
    2> >(grep -v 'is ignored: it is neither' >&2)

# Every dependency (for that Python, Linux, no extras) is a wheel here or
# is on the device; a new version needing something else shows up here,
# not after a 15-minute lease.
"$PY" - "$DEST" "$PYVER" <<'EOF'
import email, pathlib, re, sys, zipfile

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:  # a bare interpreter: pip's own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

dest, pyver = pathlib.Path(sys.argv[1]), sys.argv[2]
ON_DEVICE = '''torch torchvision triton numpy scipy matplotlib pyyaml rich
    regex einops six tqdm packaging pillow pytest opencv-python-headless
    importlib-metadata setuptools typing-extensions markdown click'''.split()
# mmcv/mmengine ask for opencv-python; the device's headless build is the
# same cv2 module. mmcv-lite stands in for mmcv.
SAME = {'opencv-python': 'opencv-python-headless', 'mmcv': 'mmcv-lite'}
env = default_environment()
env.update(python_version=pyver, python_full_version=pyver + '.0',
           sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', implementation_name='cpython',
           platform_python_implementation='CPython', os_name='posix')

def norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()

wheels = sorted(dest.glob('*.whl'))
have = {norm(w.name.split('-')[0]) for w in wheels} | set(ON_DEVICE)
missing = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist()
                    if n.endswith('.dist-info/METADATA'))
        msg = email.message_from_bytes(z.read(meta))
    for line in msg.get_all('Requires-Dist') or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(dict(env, extra='')):
            continue
        name = SAME.get(norm(req.name), norm(req.name))
        if name not in have:
            missing.append(f'{wheel.name.split("-")[0]} needs {req}')
if missing:
    sys.exit('[gpu-wheels] not in the wheels and not on the device:\n  '
             + '\n  '.join(missing))
print(f'[gpu-wheels] dependencies covered ({len(wheels)} wheels)')
EOF

size_kib=$(du -sk "$DEST" | cut -f1)
log "$(ls "$DEST"/*.whl | wc -l) wheels, $((size_kib / 1024)) MiB in $DEST"
if (( size_kib > MAX_MIB * 1024 )); then
    echo "[gpu-wheels] $DEST is over $MAX_MIB MiB: it must travel with the tree within 64 MiB" >&2
    exit 1
fi
log "on the GPU machine: tools/gpu_check.sh --out results/gpu_check (installs from $DEST)"
