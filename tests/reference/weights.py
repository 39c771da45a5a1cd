"""Random weights for the comparisons, and the reference's key map.

The reference uses the authors' parameter names; :func:`to_dwnet_mm` maps
them to dwnet_mm's, written here from REFERENCE.md section 5 and dwnet_mm's
documented module names, independently of dwnet_mm's converters (which the
comparisons check too, through the documented loading routes).
"""
import re

import torch

# (pattern, replacement) on the part of a key after ``layers.{s}.blocks.{b}.``
_BLOCK_NAMES = [
    (r'^attn2conv\.conv0\.', 'mixer.pointwise_in.conv.'),
    (r'^attn2conv\.bn0\.', 'mixer.pointwise_in.bn.'),
    (r'^attn2conv\.conv2\.', 'mixer.pointwise_out.conv.'),
    (r'^attn2conv\.bn2\.', 'mixer.pointwise_out.bn.'),
    (r'^attn2conv\.conv\.', 'mixer.depthwise.conv.'),
    (r'^attn2conv\.se\.fc1\.', 'mixer.se.reduce.'),
    (r'^attn2conv\.se\.fc2\.', 'mixer.se.expand.'),
    (r'^extra\.conv\.', 'extra_dw.conv.'),
    (r'^extra\.bn\.', 'extra_dw.norm.'),
    (r'^extra\.se\.fc1\.', 'extra_dw.se.reduce.'),
    (r'^extra\.se\.fc2\.', 'extra_dw.se.expand.'),
    (r'^attn2conv\.bn\.', 'mixer.depthwise.norm.'),
    (r'^bn\.', 'norm.'),
    (r'^mlp\.', 'mlp.'),
]


def reference_key_to_dwnet_mm(key, last_stage=3, norm_abbr='bn'):
    """One reference (authors') backbone key in dwnet_mm's names;
    ``norm_abbr`` is the name mmcv's ConvModule gives its norm ('ln' for
    LayerNorms)."""
    if key.startswith('patch_embed.proj.'):
        return key.replace('patch_embed.proj.', 'patch_embed.projection.')
    if key.startswith('norm.'):
        return f'norm{last_stage}.' + key[len('norm.'):]
    match = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$', key)
    if match:
        stage, block, rest = match.groups()
        for pattern, new in _BLOCK_NAMES:
            if re.match(pattern, rest):
                rest = re.sub(pattern, new, rest)
                break
        else:
            raise KeyError(f'unmapped reference key {key}')
        rest = re.sub(r'^(mixer\.pointwise_(in|out))\.bn\.',
                      rf'\1.{norm_abbr}.', rest)
        return f'stages.{stage}.blocks.{block}.{rest}'
    match = re.match(r'^layers\.(\d+)\.downsample\.(.*)$', key)
    if match:
        return 'stages.{}.downsample.{}'.format(*match.groups())
    if re.match(r'^(patch_embed\.norm|norm\d)\.', key):
        return key
    raise KeyError(f'unmapped reference key {key}')


def to_dwnet_mm(state_dict, prefix='', last_stage=3, norm_abbr='bn'):
    """A state dict holding reference backbone keys under ``prefix`` (and
    anything else, passed through) with dwnet_mm's backbone names."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            key = prefix + reference_key_to_dwnet_mm(key[len(prefix):],
                                                     last_stage, norm_abbr)
        out[key] = value
    return out


@torch.no_grad()
def randomize_(model, seed=0, scale=1.):
    """Give every parameter and norm statistic of ``model`` random values.

    Default initialisation (BN weight 1, bias 0, mean 0, var 1; zero
    biases) hides wrong folding and wrong norms; these values do not.
    Weights get unit-gain fan-in scaling so that deep models stay finite.
    """
    generator = torch.Generator().manual_seed(seed)

    def rand(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    def randn(shape, std):
        return torch.randn(shape, generator=generator) * std

    kernel_generators = {
        f'{module_name}.conv2.{name}': module.k
        for module_name, module in model.named_modules()
        if hasattr(module, 'k') and hasattr(module, 'conv2')
        for name, _ in module.conv2.named_parameters()
    }
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        shape = tensor.shape
        if name.endswith('running_var'):
            value = rand(shape, 0.5, 2.0)
        elif name.endswith('running_mean'):
            value = randn(shape, 0.3)
        elif tensor.dim() == 1 and name.endswith('weight'):
            value = rand(shape, 0.6, 1.4)  # norm scales
        elif tensor.dim() == 1:
            value = randn(shape, 0.1)  # biases, norm shifts
        else:
            fan_in = tensor[0].numel()
            std = scale / fan_in**0.5
            # Taps of std 1/k keep a dynamic k x k conv near unit gain;
            # std 1 would grow each block k-fold and overflow deep stages.
            std /= kernel_generators.get(name, 1)
            value = randn(shape, std)
        tensor.copy_(value.to(tensor.dtype))
    return model


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-30)).item()
