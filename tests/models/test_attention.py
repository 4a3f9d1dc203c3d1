"""SDPA batch chunking: large batches of sequences are split under the fused kernels' grid limit."""

import pytest
import torch
import torch.nn.functional as F

from keyvid.models import attention
from keyvid.models.attention import sdpa_chunks
from tests.models.test_unet import B, H, W, _inputs, _tiny


@pytest.mark.parametrize(
    "batch,limit,expected",
    [(10, 65_535, [10]), (65_535, 65_535, [65_535]), (65_536, 65_535, [32_768, 32_768]),
     (98_304, 65_535, [49_152, 49_152]), (7, 3, [3, 2, 2]), (0, 4, [0])],
)
def test_chunks_are_the_fewest_near_equal_under_the_limit(batch, limit, expected):
    sizes = sdpa_chunks(batch, limit)
    assert sizes == expected
    assert sum(sizes) == batch and max(sizes) <= limit


def test_chunks_reject_a_non_positive_limit():
    with pytest.raises(ValueError, match="limit"):
        sdpa_chunks(4, 0)


def _count_sdpa_calls(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def counting(q, k, v, *a, **kw):
        calls.append(q.shape[0])
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    return calls


def test_chunked_attention_equals_one_call_values_and_grads(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(11, 12, 2 * 8, generator=g, requires_grad=True) for _ in range(3))
    ref = attention.attend(q, k, v, heads=2)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    calls = _count_sdpa_calls(monkeypatch)
    monkeypatch.setattr(attention, "SDPA_MAX_BATCH", 4)
    out = attention.attend(q, k, v, heads=2)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert calls == [4, 4, 3]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_unet_temporal_attention_is_chunked_and_unchanged(monkeypatch):
    """The UNet's temporal attentions see batch x h x w sequences; with a small limit every such
    call is split, and the output is what one call per attention gives."""
    model = _tiny().eval()
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs)
        calls = _count_sdpa_calls(monkeypatch)
        monkeypatch.setattr(attention, "SDPA_MAX_BATCH", 64)
        out = model(**inputs)
    assert max(calls) <= 64
    assert calls.count(B * H * W // 2) >= 2  # the full-resolution temporal attentions: 128 -> 2 x 64
    assert ref.abs().mean() > 0.01  # the perturbed output layers make the output non-trivial
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
