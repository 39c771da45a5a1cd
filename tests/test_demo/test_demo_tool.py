"""tools/demo.py end to end in its --quick form: generated data, one
training epoch / two iterations per task through tools/train.py, the
evaluation through tools/test.py, and the report read back from what
mmengine wrote."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'tools', 'demo.py')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('demo_quick')
    dirs = {name: str(tmp / name) for name in ('data', 'out', 'work')}
    proc = subprocess.run(
        [sys.executable, DEMO, '--quick', '--data-root', dirs['data'],
         '--out', dirs['out'], '--work-dir', dirs['work']],
        capture_output=True, text=True, timeout=600)
    return proc, dirs


def test_quick_demo_runs_every_task(quick_run):
    proc, dirs = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for task in ('cls', 'det', 'seg'):
        assert f'[demo] {task}: training configs/{task}/demo_' in out
        assert f'[demo] {task}: evaluating' in out
    # mmengine's progress lines come through, the config dump does not.
    assert 'Epoch(train)' in out and 'Iter(train)' in out
    assert 'Config:' not in out
    # The summary table names the evaluators' keys.
    for key in ('accuracy/top1', 'coco/bbox_mAP', 'coco/segm_mAP', 'mIoU'):
        assert f'(`{key}`)' in out
    assert '[demo] total wall time' in out


def test_quick_demo_writes_the_report(quick_run):
    proc, dirs = quick_run
    assert proc.returncode == 0
    out = dirs['out']
    with open(osp.join(out, 'metrics.json')) as f:
        metrics = json.load(f)
    assert set(metrics) == {'cls', 'det', 'seg'}
    with open(osp.join(out, 'summary.md')) as f:
        summary = f.read()
    # Straight from the evaluators: the values tools/test.py logged, shown
    # in the summary table (det's 0..1 COCO values as %).
    for task, key, factor in [('cls', 'accuracy/top1', 1),
                              ('det', 'coco/bbox_mAP', 100),
                              ('seg', 'mIoU', 1)]:
        value = metrics[task]['metrics'][key]
        with open(osp.join(out, 'logs', f'{task}_test.log')) as f:
            assert f'{key}: {value:.4f}' in f.read(), (task, key, value)
        assert f'(`{key}`) | {value * factor:.1f} |' in summary, (task, key)
    assert '| task | model |' in summary
    assert '--quick' in summary
    for name in ('training_curves.png', 'cls_predictions.png',
                 'det_predictions.png', 'seg_predictions.png'):
        with Image.open(osp.join(out, name)) as image:
            assert image.width > 100 and image.height > 100
    for task in ('cls', 'det', 'seg'):
        for stage in ('train', 'test'):
            assert osp.getsize(osp.join(out, 'logs',
                                        f'{task}_{stage}.log')) > 0


@pytest.mark.skipif(
    __import__('torch').cuda.is_available(),
    reason='on GPU hosts dist_train.sh starts one process per GPU (NCCL)')
def test_second_run_reuses_the_data_and_trains_with_two_processes(
        quick_run):
    """Run again on the same data root, through tools/dist_train.sh: the
    data is reused, and two gloo processes each log a world size of 2
    before the evaluation."""
    proc, dirs = quick_run
    assert proc.returncode == 0
    assert '[demo] data: writing' in proc.stdout
    out, work = dirs['out'] + '2', dirs['work'] + '2'
    again = subprocess.run(
        [sys.executable, DEMO, '--quick', '--tasks', 'cls', '--dist', '2',
         '--data-root', dirs['data'], '--out', out, '--work-dir', work],
        capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert '[demo] data: reusing' in again.stdout
    assert '[demo] data: writing' not in again.stdout
    assert '[demo] cls: training configs/cls/demo_dwnet-nano_shapes.py ' \
        'with 2 processes' in again.stdout
    with open(osp.join(out, 'logs', 'cls_train.log')) as f:
        log = f.read()
    assert 'no GPU visible: 2 CPU processes on the gloo backend' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's world size
    with open(osp.join(out, 'metrics.json')) as f:
        assert 'accuracy/top1' in json.load(f)['cls']['metrics']


def test_a_failing_stage_is_reported(tmp_path):
    """A broken dataset: the demo stops, names the stage, shows the end of
    the log and exits with an error."""
    import shutil

    sys.path.insert(0, osp.join(REPO, 'tools'))
    try:
        from demo import quick_spec
    finally:
        sys.path.pop(0)
    from dwnet_mm.demo import generate_demo_data
    data = str(tmp_path / 'data')
    generate_demo_data(data, spec=quick_spec())
    shutil.rmtree(osp.join(data, 'imagenet', 'train'))  # manifest kept
    proc = subprocess.run(
        [sys.executable, DEMO, '--quick', '--tasks', 'cls', '--data-root',
         data, '--out', str(tmp_path / 'out'), '--work-dir',
         str(tmp_path / 'work')],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert '[demo] cls: FAILED: exit status' in proc.stdout
    assert 'cls_train.log' in proc.stdout
    assert '    | ' in proc.stdout  # the end of the log
