"""tools/gpu_check.sh: the GPU check's steps run on the CPU (``--device
cpu``: small sizes, Triton's interpreter, the benchmark untimed), so that
the command a lent GPU machine runs does not rot. Its summary must account
for every section: passed, or skipped with a reason. (About 4 minutes of
CPU time; the time limit is a safety net for busy CI machines.)"""
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tools_helpers import REPO_ROOT, load_tool

SECTIONS = ('reference', 'triton', 'amp', 'benchmark', 'detector')


def gpu_check(out, *args, timeout=1500):
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ['bash', f'{REPO_ROOT}/tools/gpu_check.sh', '--device', 'cpu',
         '--out', str(out), '--wheels', str(out / 'no_wheels'), *args],
        env=env, capture_output=True, text=True, timeout=timeout)
    summary_path = out / 'summary.json'
    assert summary_path.exists(), result.stdout[-3000:] + result.stderr
    return result, json.loads(summary_path.read_text())


def assert_accounted_for(summary):
    """Every section is there: passed, or skipped saying why."""
    assert set(summary['sections']) == set(SECTIONS)
    for name, section in summary['sections'].items():
        assert section['status'] in ('passed', 'skipped'), (
            name, section.get('summary'), section.get('error'),
            section.get('details', {}).get('failures'))
        if section['status'] == 'skipped':
            assert section['skipped'], name
        for part in section.get('skipped', []):
            assert part['what'] and part['why'], (name, part)


def test_gpu_check_on_cpu(tmp_path):
    # The detector section runs in the next test (its backbone + FPN step;
    # the whole detector's step is the suite's tests/test_det).
    result, summary = gpu_check(tmp_path, '--sections', 'reference', 'triton',
                                'amp', 'benchmark')
    assert result.returncode == 0, result.stdout[-3000:]
    assert summary['passed'] and summary['device'] == 'cpu'
    assert_accounted_for(summary)
    env = summary['environment']
    assert env['mmcv_ops']['available'], env['mmcv_ops']
    sections = summary['sections']

    tests = sections['reference']['details']['tests']
    for group in ('test_backbone_vs_reference::test_eval_outputs',
                  'test_backbone_vs_reference::test_train_step_float32',
                  'test_autocast_vs_reference::test_backbone_autocast',
                  'test_autocast_vs_reference::'
                  'test_a_wrong_model_misses_the_bf16_tolerance',
                  'test_autocast_vs_reference::test_classifier_autocast'):
        assert tests.get(group, {}).get('passed', 0) > 0, (group, tests)
    assert not any(c.get('failed') for c in tests.values())

    triton = sections['triton']
    if importlib.util.find_spec('triton') is None:
        assert triton['status'] == 'skipped'
    else:
        assert triton['status'] == 'passed', triton
        checks = triton['details']['dtype_checks']
        assert {c['dtype'] for c in checks} == {'fp32', 'bf16', 'fp16'}
        for c in checks:
            assert c['triton_grad_w'] < c['tolerance'], c

    steps = sections['amp']['details']['steps']
    assert {(s['conv_type'], s['precision']) for s in steps} == {
        (c, p) for c in ('static', 'dynamic', 'i_dynamic')
        for p in ('fp32', 'bf16')}
    assert all(s['wrapper'] == 'AmpOptimWrapper' for s in steps
               if s['precision'] == 'bf16')

    bench = sections['benchmark']
    assert {r['model'] for r in bench['details']['rows']} == {
        'i_dynamic_dwnet_tiny', 'swin_tiny'}
    assert {r['mode'] for r in bench['details']['rows']} == {'infer', 'train'}
    assert (tmp_path / 'benchmark_fp32.json').exists()

    assert sections['detector']['status'] == 'skipped'

    markdown = (tmp_path / 'summary.md').read_text()
    assert markdown.startswith('# dwnet_mm GPU check: passed')
    for name in SECTIONS:
        assert f'| {name} | {sections[name]["status"]} |' in markdown
    log = (tmp_path / 'gpu_check.log').read_text()
    assert '===== reference' in log and 'passed' in log


def test_without_mmcv_ops_runs_backbone_and_fpn(tmp_path):
    """What a GPU machine with mmcv-lite gets: the detector's backbone +
    FPN step, the rest of the detector skipped with the reason."""
    result, summary = gpu_check(tmp_path, '--sections', 'detector',
                                '--without-mmcv-ops')
    assert result.returncode == 0, result.stdout[-3000:]
    assert_accounted_for(summary)
    assert not summary['environment']['mmcv_ops']['available']
    detector = summary['sections']['detector']
    assert detector['status'] == 'passed'
    assert detector['details']['step'].startswith('backbone + FPN')
    whys = [p['why'] for p in detector['skipped']]
    assert any('--without-mmcv-ops' in why for why in whys), whys
    for name in ('reference', 'triton', 'amp', 'benchmark'):
        assert summary['sections'][name]['status'] == 'skipped'


@pytest.fixture
def gpu_check_module():
    return load_tool('tools/gpu_check.py')


def test_a_failed_test_fails_its_section(tmp_path, gpu_check_module):
    junit = tmp_path / 'junit.xml'
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.test_reference.test_a" '
        'name="test_x[cuda]"/>'
        '<testcase classname="tests.test_reference.test_a" name="test_x[cpu]">'
        '<failure message="error 2e-3 &gt;= 1e-4"/></testcase>'
        '<testcase classname="tests.test_reference.test_a" name="test_y">'
        '<skipped message="needs CUDA"/></testcase>'
        '</testsuite></testsuites>')
    cases = gpu_check_module.read_junit(junit)
    assert gpu_check_module.pytest_status(0, cases) == 'failed'
    assert gpu_check_module.pytest_status(0, cases[:1]) == 'passed'
    assert gpu_check_module.pytest_status(5, []) == 'failed'  # none ran
    details = gpu_check_module.summarise_cases(cases)
    assert details['tests']['test_a::test_x'] == dict(passed=1, failed=1)
    assert details['skipped_tests'] == [dict(count=1, why='needs CUDA')]


def test_wheels_are_installed_only_where_modules_are_missing(
        tmp_path, gpu_check_module):
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    for name, module in (('present', 'json'),
                         ('absent', 'gpu_check_absent_module')):
        with zipfile.ZipFile(wheels / f'{name}-1.0-py3-none-any.whl',
                             'w') as z:
            z.writestr(f'{module}/__init__.py', 'VALUE = 1\n')
            z.writestr(f'{name}-1.0.dist-info/METADATA',
                       f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n')
            z.writestr(f'{name}-1.0.dist-info/WHEEL',
                       'Wheel-Version: 1.0\nRoot-Is-Purelib: true\n'
                       'Tag: py3-none-any\n')
            z.writestr(f'{name}-1.0.dist-info/RECORD', '')
    assert gpu_check_module.wheel_modules(
        wheels / 'absent-1.0-py3-none-any.whl') == ['gpu_check_absent_module']

    class Log:
        file = open(tmp_path / 'log', 'w')

        def say(self, text):
            pass

    site = tmp_path / 'site'
    installed = gpu_check_module.install_wheels(wheels, site, Log())
    assert installed == ['absent-1.0-py3-none-any.whl']
    assert (site / 'gpu_check_absent_module' / '__init__.py').exists()
    assert not (site / 'json').exists()
