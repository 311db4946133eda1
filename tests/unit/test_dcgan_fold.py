import pytest
import torch
from torch.nn import functional as F

from aigc_core.models.dcgan import _conv_by_taps, _taps, _unfold


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 9, 11)])
def test_unfold_equals_torch_unfold(shape, channels_last):
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(_unfold(x, 5), F.unfold(x, 5, padding=2))


def test_conv_by_taps_backward_equals_fold_backward():
    """The taps' fold has its own backward: the input's and the taps' gradients are F.fold's."""
    torch.manual_seed(0)
    w = torch.randn(2, 6, 5, 5)
    x = torch.randn(3, 6, 10, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y = _conv_by_taps(x, _taps(w), 5)
    n, _, h, wd = x2.shape
    y_ref = F.fold(F.conv2d(x2, _taps(w)).reshape(n, -1, h * wd), (h, wd), 5, padding=2)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
