"""Bad input to the tools: one clear line and a non-zero exit status.

The shell launchers and one Python tool run as subprocesses (exit status
and stderr as a user sees them); the other Python errors come from the
tools' ``main(argv)`` in this process, as the ``SystemExit`` that the
interpreter would print as the one line on stderr.
"""
import os
import os.path as osp

import pytest
import torch

from tools_helpers import (REPO_ROOT, TINY_CONFIG, data_options, free_port,
                           load_tool, run_tool)


def assert_one_line_error(result, *fragments):
    """A subprocess that failed with exactly one ``error:`` line."""
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def exit_message(tool, argv):
    """The message of the SystemExit that ``tool``'s main(argv) raises."""
    with pytest.raises(SystemExit) as info:
        load_tool(f'tools/{tool}').main(argv)
    message = info.value.code
    assert isinstance(message, str), message  # printed, exit status 1
    assert message.startswith('error: ') and '\n' not in message, message
    return message


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('tools/train.py')


def test_unknown_model_type_names_the_type(tiny_imagenet, tmp_path):
    config = tmp_path / 'misspelt.py'
    config.write_text(f"_base_ = [{TINY_CONFIG!r}]\n"
                      "model = dict(backbone=dict(type='DWNetX'))\n")
    result = run_tool([
        'train.py',
        str(config), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *data_options(tiny_imagenet)
    ])
    assert_one_line_error(result, "unknown type 'DWNetX'",
                          'mmpretrain::model registry', 'custom_imports')


def test_missing_config(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    message = exit_message('train.py', [missing])
    assert missing in message and 'does not exist' in message
    message = exit_message('test.py', [missing, 'model.pth'])
    assert missing in message and 'does not exist' in message


def test_missing_config_through_launchers(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    result = run_tool(['dist_train.sh', missing, '1'])
    assert_one_line_error(result, missing, 'does not exist')
    assert result.returncode == 2
    result = run_tool(['slurm_train.sh', 'partition', 'job', missing])
    assert_one_line_error(result, missing, 'does not exist')


def test_missing_dataset_path(tmp_path):
    missing = str(tmp_path / 'no_such_dataset')
    message = exit_message('train.py', [
        TINY_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *data_options(missing)
    ])
    assert missing in message and 'does not exist' in message
    # Names the setting that fixes it.
    assert '--cfg-options train_dataloader.dataset.data_root=' in message
    model = tmp_path / 'model.pth'
    model.touch()
    message = exit_message(
        'test.py',
        [TINY_CONFIG,
         str(model), '--cfg-options', *data_options(missing)])
    assert missing in message and 'test_dataloader' in message


def test_missing_checkpoints(tiny_imagenet, tmp_path):
    missing = str(tmp_path / 'no_such_checkpoint.pth')
    message = exit_message(
        'test.py',
        [TINY_CONFIG, missing, '--cfg-options', *data_options(tiny_imagenet)])
    assert missing in message and 'does not exist' in message
    message = exit_message('train.py', [
        TINY_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--resume', missing, '--cfg-options',
        *data_options(tiny_imagenet)
    ])
    assert missing in message and 'resume' in message
    result = run_tool(['dist_test.sh', TINY_CONFIG, missing, '1'])
    assert_one_line_error(result, missing, 'does not exist')


def test_more_processes_than_the_machine_has():
    """dist_*.sh start one process per GPU, at most one per visible GPU.

    Without a GPU they start CPU processes on gloo, at most one per core:
    more would only slow the run down, so asking for more is refused too.
    """
    if torch.cuda.is_available():
        limit = torch.cuda.device_count()
        refused = f'{limit + 1} GPUs requested'
    else:
        limit = len(os.sched_getaffinity(0))
        refused = f'{limit + 1} processes requested but no GPU is visible'
    result = run_tool(['dist_train.sh', TINY_CONFIG,
                       str(limit + 1)],
                      PORT=str(free_port()))
    assert_one_line_error(result, refused, f'pass at most {limit}')
    assert result.returncode == 2


@pytest.mark.parametrize('count', ['0', 'two', '-1'])
def test_process_count_not_a_positive_integer(count):
    result = run_tool(['dist_train.sh', TINY_CONFIG, count])
    assert_one_line_error(result, 'positive integer', repr(count))


def test_tta_without_tta_settings(tmp_path):
    config = tmp_path / 'no_tta.py'
    config.write_text(f"_base_ = [{TINY_CONFIG!r}]\n"
                      "tta_model = None\n")
    model = tmp_path / 'model.pth'
    model.touch()
    message = exit_message('test.py', [str(config), str(model), '--tta'])
    assert 'tta_model' in message


def test_launch_scripts_are_executable():
    tools = osp.join(REPO_ROOT, 'tools')
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
                 'slurm_test.sh', 'mpi_train.sh'):
        assert os.access(osp.join(tools, name), os.X_OK), name
