"""Conversion of the authors' DWNet checkpoints (DemystifyLocalViT release).

Classification files hold ``model`` with ``layers.{s}.blocks.{b}.attn2conv``
names; the mmdet 2.x / mmseg 0.x releases hold ``state_dict`` with the same
names behind ``backbone.``. This module maps them to dwnet_mm's names.
"""
import re

# Applied in order to the part of a key after ``stages.{s}.blocks.{b}.``.
_BLOCK_RENAMES = (
    ('attn2conv.conv0.', 'mixer.pointwise_in.conv.'),
    ('attn2conv.bn0.', 'mixer.pointwise_in.bn.'),
    ('attn2conv.conv2.', 'mixer.pointwise_out.conv.'),
    ('attn2conv.bn2.', 'mixer.pointwise_out.bn.'),
    ('attn2conv.conv.', 'mixer.depthwise.conv.'),
    ('attn2conv.bn.', 'mixer.depthwise.norm.'),
    ('bn.', 'norm.'),
)
_BLOCK_KEY = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$')
_DOWNSAMPLE_KEY = re.compile(r'^layers\.(\d+)\.downsample\.(.*)$')


def is_authors_layout(state_dict):
    """Whether a backbone state dict uses the authors' parameter names."""
    return any('.attn2conv.' in key for key in state_dict)


def convert_authors_key(key, num_stages=4):
    """Map one key of the authors' backbone to dwnet_mm's name.

    Returns None for keys that are not part of the backbone (``head.*``).
    """
    if key.startswith('head.'):
        return None
    if key.startswith('patch_embed.proj.'):
        return 'patch_embed.projection.' + key[len('patch_embed.proj.'):]
    if key.startswith('norm.'):
        # Classification: one LayerNorm after the last stage.
        return f'norm{num_stages - 1}.' + key[len('norm.'):]
    match = _BLOCK_KEY.match(key)
    if match:
        stage, block, rest = match.groups()
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        return f'stages.{stage}.blocks.{block}.{rest}'
    match = _DOWNSAMPLE_KEY.match(key)
    if match:
        return 'stages.{}.downsample.{}'.format(*match.groups())
    return key  # patch_embed.norm.*, norm0..norm3.*


def convert_authors_backbone(state_dict, num_stages=4):
    """Convert an authors' backbone state dict (no ``backbone.`` prefix).

    Args:
        state_dict (dict): Authors' backbone parameters.
        num_stages (int): Number of stages. Defaults to 4.

    Returns:
        tuple[dict, dict]: dwnet_mm backbone state dict and the classifier
        head's parameters (``head.*`` of classification files, else empty).
    """
    backbone, head = {}, {}
    for key, value in state_dict.items():
        new_key = convert_authors_key(key, num_stages)
        if new_key is None:
            head[key[len('head.'):]] = value
        else:
            backbone[new_key] = value
    return backbone, head


def convert_authors_full_model(state_dict, release, allowed_prefixes=None):
    """Rename the backbone keys of an authors' mmdet 2.x / mmseg 0.x model.

    Everything outside ``backbone.`` is passed through: mmdet 3 and mmseg 1
    kept the neck and head parameter names of those releases.

    Args:
        state_dict (dict): The released model's state dict (a ``module.``
            prefix left by a data-parallel wrapper is stripped).
        release (str): What the file should be, for error messages, e.g.
            "mmdet 2.x detector".
        allowed_prefixes (tuple[str], optional): The only top-level
            prefixes the model may have. Defaults to None (any).

    Returns:
        dict: The state dict with dwnet_mm backbone names.
    """
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    backbone = {
        k[len('backbone.'):]: v
        for k, v in state_dict.items() if k.startswith('backbone.')
    }
    if not backbone:
        raise ValueError(
            f'no "backbone." key in the checkpoint: expected an {release} '
            f'checkpoint of the authors\' release; first keys: '
            f'{list(state_dict)[:5]}')
    if not is_authors_layout(backbone):
        layout = ('already in dwnet_mm layout (use it directly with '
                  'tools/test.py)' if any(
                      k.startswith('stages.') for k in backbone) else
                  'not a DWNet backbone')
        raise ValueError(
            f'the backbone keys are not the authors\' DWNet names '
            f'("layers.*.attn2conv.*"): {layout}; first backbone keys: '
            f'{list(backbone)[:5]}')
    converted, cls_head = convert_authors_backbone(backbone)
    if cls_head:
        raise ValueError(
            'the backbone holds a classification head ("head.*"): this is a '
            'classification checkpoint, which DWNet\'s Pretrained init_cfg '
            f'reads directly; this tool converts {release} checkpoints')
    if allowed_prefixes:
        others = [k for k in state_dict if not k.startswith(allowed_prefixes)]
        if others:
            raise ValueError(
                f'keys outside {"/".join(allowed_prefixes)}: this is not an '
                f'{release} checkpoint; e.g. {others[:5]}')
    new_state_dict = {'backbone.' + k: v for k, v in converted.items()}
    new_state_dict.update(
        (k, v) for k, v in state_dict.items() if not k.startswith('backbone.'))
    return new_state_dict


def convert_authors_full_checkpoint(checkpoint, release, converted_by,
                                    version_key, allowed_prefixes=None,
                                    source=None):
    """Convert a loaded mmdet 2.x / mmseg 0.x checkpoint of the authors'
    release: the state dict by :func:`convert_authors_full_model`, the old
    ``meta`` (``CLASSES``, ``PALETTE``) into mmengine's ``dataset_meta``; the
    optimizer state is dropped.

    Args:
        checkpoint (dict): The loaded file: ``state_dict`` (or a bare state
            dict) and optionally ``meta``.
        release (str): What the file should be, e.g. "mmdet 2.x detector".
        converted_by (str): The converting tool, recorded in ``meta``.
        version_key (str): The framework version key of the old ``meta``,
            e.g. 'mmdet_version'.
        allowed_prefixes (tuple[str], optional): See
            :func:`convert_authors_full_model`.
        source (str, optional): Where it came from, kept in ``meta``.

    Returns:
        dict: ``state_dict`` and ``meta`` for mmengine's ``load_checkpoint``.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f'a checkpoint must be a dict, got '
                         f'{type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    old_meta = checkpoint.get('meta') or {}
    meta = dict(converted_by=converted_by)
    if source:
        meta['converted_from'] = source
    dataset_meta = {}
    if old_meta.get('CLASSES') is not None:
        dataset_meta['classes'] = tuple(old_meta['CLASSES'])
    if old_meta.get('PALETTE') is not None:
        dataset_meta['palette'] = [list(c) for c in old_meta['PALETTE']]
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    for key in ('epoch', 'iter', version_key):
        if key in old_meta:
            meta[f'source_{key}'] = old_meta[key]
    return dict(
        state_dict=convert_authors_full_model(state_dict, release,
                                              allowed_prefixes),
        meta=meta)
