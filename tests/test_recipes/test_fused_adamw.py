"""The configs' fused AdamW is the authors' AdamW update (torch.optim.AdamW's
per-parameter loop) up to float32 rounding: both are checked against the
loop in float64."""
import pytest
import torch


def _run(dtype, **kwargs):
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(shape, generator=generator,
                                       dtype=torch.float64).to(dtype))
        for shape in ((64, 32), (32, ), (7, 1, 3, 3))
    ]
    optimizer = torch.optim.AdamW(
        params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
        **kwargs)
    for _ in range(20):
        for param in params:
            param.grad = torch.randn(
                param.shape, generator=generator,
                dtype=torch.float64).to(dtype)
        optimizer.step()
    return [p.detach().double() for p in params]


def _max_error(params, reference):
    return max(((p - r).abs() / r.abs().clamp_min(1e-3)).max().item()
               for p, r in zip(params, reference))


@pytest.mark.parametrize('kernel', [dict(fused=True), dict(foreach=False)])
def test_fused_adamw_is_the_loop(kernel):
    reference = _run(torch.float64, foreach=False)
    error = _max_error(_run(torch.float32, **kernel), reference)
    # float32 rounding over 20 steps, not a different update: lr x 20 steps
    # moves each weight by up to 2e-2.
    assert error < 1e-5
