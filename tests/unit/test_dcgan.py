import pytest
import torch

from aigc_core import families
from aigc_core.models.dcgan import DCGANConfig, Discriminator, Dropout16, Generator, TapConv2d
from aigc_core.training.gan import GANTrainConfig, build_gan, train_gan, train_step

TINY = DCGANConfig(g_width=8, d_width=4)


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    g, d = Generator(TINY), Discriminator(TINY)
    z = torch.randn(5, TINY.z_dim)
    x = g(z)
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (5, 1)  # one logit per image


def test_seed_architecture_matches_the_spec():
    g, d = Generator(DCGANConfig()), Discriminator(DCGANConfig())
    convs_t = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs_t] == [
        (128, (5, 5), (1, 1)),
        (128, (5, 5), (2, 2)),
        (128, (5, 5), (2, 2)),
    ]
    assert g.net[0].bias is None and g.net[0].out_features == 7 * 7 * 128
    assert g.net[-2].out_channels == 1  # the seed's 3-channel bug is fixed
    d_convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride) for m in d_convs] == [(64, (2, 2)), (128, (2, 2))]
    assert isinstance(d.net[-1], torch.nn.Linear) and d.net[-1].out_features == 1


@pytest.mark.parametrize("c_out", [1, 3])
def test_tap_conv_is_conv2d_forward_and_backward(c_out):
    torch.manual_seed(0)
    tap = TapConv2d(6, c_out, 5, 1, 2, bias=False)
    ref = torch.nn.Conv2d(6, c_out, 5, 1, 2, bias=False)
    ref.load_state_dict(tap.state_dict())  # same parameters, same state dict
    x = torch.randn(4, 6, 12, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y_ref = tap(x), ref(x2)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tap.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)


def test_dropout16_drops_p_and_keeps_the_mean():
    torch.manual_seed(0)
    d = Dropout16(0.3)
    x = torch.ones(200_000)
    y = d(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.005
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout: expectation unchanged
    assert torch.equal(d.eval()(x), x)  # eval mode: identity
    xg = torch.ones(1000, requires_grad=True)
    out = Dropout16(0.3)(xg)
    out.sum().backward()
    assert torch.equal(xg.grad, out.detach())  # gradient through the same mask


@pytest.mark.parametrize("channels", [1, 3])
def test_inference_form_equals_the_generator_in_eval_mode(channels):
    cfg = DCGANConfig(g_width=8, channels=channels)
    torch.manual_seed(0)
    g = Generator(cfg)
    with torch.no_grad():  # BatchNorm statistics and affine parameters far from the identity
        g.train()(torch.randn(64, cfg.z_dim) * 3)
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    g.eval()
    z = torch.randn(16, cfg.z_dim)
    with torch.no_grad():
        want = g(z)
        got = g.for_inference(torch.float32)(z)
        got_bf16 = g.for_inference(torch.bfloat16)(z)
    assert got.shape == want.shape == (16, channels, 28, 28)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert got_bf16.dtype == torch.float32
    assert (got_bf16 - want).abs().max() < 0.1  # bf16 rounding, not a different function
    assert g.net[1].training is False and g.net[4].weight.requires_grad  # g itself untouched


def test_one_training_step_updates_both_networks():
    cfg = GANTrainConfig(batch_size=8, lr=1e-3)
    gan = build_gan(TINY, cfg, torch.device("cpu"))
    g0 = [p.clone() for p in gan.generator.parameters()]
    d0 = [p.clone() for p in gan.discriminator.parameters()]
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    loss_d, loss_g = train_step(gan, real, torch.randn(8, TINY.z_dim), use_bf16=False)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert any(not torch.equal(a, b) for a, b in zip(g0, gan.generator.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, gan.discriminator.parameters(), strict=True)
    )
    assert all(p.requires_grad for p in gan.discriminator.parameters())  # unfrozen again


def test_training_lowers_the_discriminator_loss():
    # real images are a fixed pattern; an untrained D sits near 2*ln2, and learns to separate
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0
    cfg = GANTrainConfig(
        batch_size=16, epochs=3, steps_per_epoch=10, lr=1e-3, beta1=0.5, bf16=False
    )
    _, history = train_gan(images, TINY, cfg, torch.device("cpu"))
    assert len(history) == 3
    assert history[-1]["loss_d"] < history[0]["loss_d"]


def test_training_is_deterministic_on_cpu():
    images = torch.rand(32, 1, 28, 28)
    cfg = GANTrainConfig(batch_size=8, epochs=1, steps_per_epoch=3, bf16=False)
    a, _ = train_gan(images, TINY, cfg, torch.device("cpu"))
    b, _ = train_gan(images, TINY, cfg, torch.device("cpu"))
    for p, q in zip(
        a.generator.state_dict().values(), b.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'huge' for dcgan"):
        families.get("dcgan").preset("huge")
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 28, 28\)"):
        train_gan(torch.rand(4, 3, 28, 28), TINY, GANTrainConfig(), torch.device("cpu"))
    with pytest.raises(ValueError, match="multiple of 4"):
        DCGANConfig(image_size=30)
