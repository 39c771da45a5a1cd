"""Load DWNet weights from any supported checkpoint layout."""
import os.path as osp

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger, print_log
from torch.nn.modules.batchnorm import _BatchNorm

from .authors import convert_authors_backbone, is_authors_layout
from .deploy import training_form
from ..safe_loading import safe_load

_BACKBONE_PREFIXES = ('backbone.', 'module.backbone.')


class UnknownCheckpointLayout(ValueError):
    """Raised for checkpoints that hold no recognisable DWNet weights."""


#: The converters' name for :func:`~dwnet_mm.safe_loading.safe_load` (same
#: arguments: ``filename, map_location='cpu', trust=None``).
load_checkpoint_file = safe_load


def save_checkpoint(checkpoint, dst):
    """Write a converted checkpoint: ``.safetensors`` (tensors only, which
    cannot run code when read: the format to share) or ``torch.save``.

    Args:
        checkpoint (dict): A state dict, or a dict with one under
            ``state_dict``; for ``.safetensors`` its ``meta`` goes into the
            file's metadata as JSON.
        dst (str): The output path.
    """
    if not str(dst).endswith('.safetensors'):
        torch.save(checkpoint, dst)
        return
    import json

    from safetensors.torch import save_file
    state_dict = checkpoint.get('state_dict', checkpoint)
    tensors = {k: v.detach().contiguous().clone() for k, v in
               state_dict.items()}
    meta = checkpoint.get('meta') if 'state_dict' in checkpoint else None
    save_file(tensors, dst, metadata=dict(meta=json.dumps(meta, default=str))
              if meta else None)


def convert_checkpoint_file(src, dst, convert, trust=None):
    """Load ``src``, convert it and save the result to ``dst``.

    Args:
        src (str): Checkpoint to read (see :func:`load_checkpoint_file`).
        dst (str): Where the converted checkpoint goes.
        convert (callable): ``convert(checkpoint, source)`` returns the new
            checkpoint; ``source`` is the file name of ``src``.
        trust (bool): See :func:`load_checkpoint_file`. Defaults to False.

    Returns:
        dict: The converted checkpoint.

    Raises:
        ValueError: If ``dst`` is ``src``, or from ``convert``.
    """
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError('dst must differ from src')
    converted = convert(load_checkpoint_file(src, trust=trust),
                        osp.basename(src))
    save_checkpoint(converted, dst)
    return converted


def extract_backbone_state_dict(checkpoint, num_stages=4, prefix=None):
    """Find the DWNet backbone weights in a loaded checkpoint.

    Accepts dwnet_mm / mmpretrain / mmdet / mmseg checkpoints (keys under
    ``state_dict``, prefixed ``backbone.``), bare backbone state dicts, and
    the authors' classification (``model``) and dense (``state_dict`` with
    ``backbone.``) releases.

    Args:
        checkpoint (dict): The loaded file.
        num_stages (int): Stages of the target model. Defaults to 4.
        prefix (str, optional): Take only keys under this prefix (stripped).
            Defaults to None (auto: ``backbone.`` when present).

    Returns:
        tuple[dict, str]: The backbone state dict in dwnet_mm names and the
        detected layout ('dwnet_mm' or 'authors').
    """
    state_dict = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(state_dict, dict) and isinstance(
                state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    if not isinstance(state_dict, dict) or not state_dict:
        raise UnknownCheckpointLayout(
            'unknown checkpoint layout: no state dict found (expected a dict '
            'of tensors, or one under "state_dict" or "model")')
    prefixes = (prefix, ) if prefix else _BACKBONE_PREFIXES
    for p in prefixes:
        if p and not p.endswith('.'):
            p += '.'
        picked = {k[len(p):]: v for k, v in state_dict.items()
                  if k.startswith(p)}
        if picked:
            state_dict = picked
            break
    else:
        if prefix:
            raise UnknownCheckpointLayout(
                f'no checkpoint key starts with prefix {prefix!r}; first '
                f'keys: {list(state_dict)[:5]}')
    if is_authors_layout(state_dict):
        return convert_authors_backbone(state_dict, num_stages)[0], 'authors'
    if any(k.startswith('stages.') for k in state_dict):
        return dict(state_dict), 'dwnet_mm'
    raise UnknownCheckpointLayout(
        'unknown checkpoint layout: expected dwnet_mm keys ("stages.*", '
        'optionally under "backbone.") or the authors\' DWNet keys '
        f'("layers.*.attn2conv.*"); first keys: {list(state_dict)[:5]}')


def resize_depthwise_kernel(weight, size, mode='bicubic'):
    """Interpolate (C, 1, k, k) depth-wise kernels to (C, 1, size, size)."""
    resized = F.interpolate(
        weight.float(), size=(size, size), mode=mode, align_corners=False)
    # Keep the response to a constant input unchanged.
    scale = weight.float().sum((2, 3), keepdim=True) / resized.sum(
        (2, 3), keepdim=True).clamp_min(1e-12)
    return (resized * scale).to(weight.dtype)


def _drop_mismatched_out_norms(model, state_dict, logger):
    """Drop output norms whose kind differs (LN of cls vs BN of dense)."""
    for i in range(getattr(model, 'num_stages', 4)):
        norm = getattr(model, f'norm{i}', None)
        keys = [k for k in state_dict if k.startswith(f'norm{i}.')]
        if not keys:
            continue
        ckpt_is_bn = f'norm{i}.running_mean' in state_dict
        if norm is None or ckpt_is_bn != isinstance(norm, _BatchNorm):
            for k in keys:
                del state_dict[k]
            print_log(f'skipped checkpoint norm{i} (classification/dense '
                      'output norm not used by this model)', logger)


def load_dwnet_checkpoint(model, filename, prefix=None, map_location='cpu',
                          resize_kernels=False, logger=None, trust=None):
    """Load DWNet weights into ``model`` from any supported layout.

    Unlike a plain non-strict load, a file that matches none of the model's
    parameters, or whose shapes disagree, raises an error.

    A deployed model (:meth:`DWNet.switch_to_deploy`) is given the file's
    training-form weights folded.

    Args:
        model (DWNet): The backbone to load into.
        filename (str): Path or URL of the checkpoint.
        prefix (str, optional): Only load keys under this prefix.
            Defaults to None (auto).
        map_location (str): Defaults to 'cpu'.
        resize_kernels (bool): Interpolate static depth-wise kernels whose
            size differs from the model's (e.g. 7x7 weights into a 12x12
            fine-tuning model). Defaults to False.
        logger (MMLogger, optional): Defaults to the current logger.
        trust (bool): The file is trusted: if the safe readers refuse it,
            unpickle it with full pickle, which runs any code it contains
            (``trust_checkpoint=True`` in the Pretrained init_cfg). Defaults
            to False.

    Returns:
        dict: ``missing_keys``, ``unexpected_keys`` and ``layout``.

    Raises:
        UnsafeCheckpointError: If the file pickles anything but tensors,
            plain containers and the known harmless classes, and ``trust``
            is off.
    """
    if getattr(model, 'deploy', False):
        # Read, resized and checked in the training form, then folded: a
        # file may lack tensors that the training form then initialises.
        twin = training_form(model)
        result = load_dwnet_checkpoint(twin, filename, prefix, map_location,
                                       resize_kernels, logger, trust)
        model.load_state_dict(twin.switch_to_deploy().state_dict())
        return result
    logger = logger or MMLogger.get_current_instance()
    checkpoint = load_checkpoint_file(filename, map_location, trust=trust)
    state_dict, layout = extract_backbone_state_dict(
        checkpoint, getattr(model, 'num_stages', 4), prefix)
    _drop_mismatched_out_norms(model, state_dict, logger)

    own = model.state_dict()
    mismatched = []
    for key, value in list(state_dict.items()):
        if key not in own or own[key].shape == value.shape:
            continue
        target = own[key].shape
        is_dw_kernel = key.endswith('mixer.depthwise.conv.weight') and \
            value.dim() == 4 and value.shape[:2] == target[:2]
        if is_dw_kernel and resize_kernels:
            state_dict[key] = resize_depthwise_kernel(value, target[-1])
        else:
            mismatched.append(f'{key}: checkpoint {tuple(value.shape)} vs '
                              f'model {tuple(target)}')
    if mismatched:
        resizable = any('depthwise.conv.weight' in m for m in mismatched)
        hint = (' (set resize_kernels=True in the Pretrained init_cfg to '
                'interpolate depth-wise kernels)' if resizable else '')
        raise RuntimeError(f'shape mismatch loading {filename}{hint}:\n  ' +
                           '\n  '.join(mismatched))

    matched = [k for k in state_dict if k in own]
    if not matched:
        raise RuntimeError(
            f'no parameter of the model was found in {filename} (layout '
            f'{layout!r}, first checkpoint keys {list(state_dict)[:5]}, first '
            f'model keys {list(own)[:5]}); check the file and the prefix')
    result = model.load_state_dict(state_dict, strict=False)
    print_log(
        f'loaded {len(matched)}/{len(own)} DWNet tensors from {filename} '
        f'({layout} layout); missing: {result.missing_keys or "none"}; '
        f'unexpected: {result.unexpected_keys or "none"}', logger)
    return dict(
        missing_keys=result.missing_keys,
        unexpected_keys=result.unexpected_keys,
        layout=layout)
