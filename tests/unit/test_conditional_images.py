"""Class-conditional DCGAN and VAE: label-dependent modules, conditional training, labels through
the shared image generator and its pyfunc `predict`, and unconditional models left as they were
(same images, same state dict). Tiny seeded models on CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from aigc_core import families, settings
from aigc_core.data.snapshot import image_table
from aigc_core.evaluation.reconstruction import reconstructions_image
from aigc_core.families.base import TrainData
from aigc_core.generation import images as images_mod
from aigc_core.generation.images import ImageGenerator, generate_images, latents
from aigc_core.generation.labels import LabelsError
from aigc_core.models.dcgan import DCGANConfig, Discriminator, Generator
from aigc_core.models.io import save_model
from aigc_core.models.vae import VAE, VAEConfig, VAEDecoder
from aigc_core.training import engine
from aigc_core.training.gan import GANTrainConfig, train_gan
from aigc_core.training.loop import TrainConfig, fit
from aigc_core.training.vae import VAEJob
from tests.conftest import tiny_images

CPU = torch.device("cpu")
K = 4
# images in [0, 1] computed by two fp32 paths (see the first use)
FP32_ATOL = 1e-4
GAN_CFG = DCGANConfig(z_dim=8, g_width=8, d_width=4, image_size=16, conditional=True, num_classes=K)
VAE_CFG = VAEConfig(z_dim=4, width=8, image_size=16, conditional=True, num_classes=K)


def squares(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 16, 16) images in [0, 1] and labels (N,): class k is a bright 6x6 square in
    quadrant k, on faint noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    x = torch.rand(n, 1, 16, 16, generator=gen) * 0.1
    for i, k in enumerate(labels.tolist()):
        r, c = 8 * (k // 2) + 1, 8 * (k % 2) + 1
        x[i, 0, r : r + 6, c : c + 6] = 1.0
    return x, labels


def quadrant_means(images: np.ndarray) -> np.ndarray:
    """(N, 1, 16, 16) -> (N, 4): mean brightness of each quadrant, in the classes' order."""
    q = images[:, 0].reshape(len(images), 2, 8, 2, 8).mean(axis=(2, 4))  # (N, 2, 2)
    return q.reshape(len(images), 4)


# --- modules ----------------------------------------------------------------------------------


def test_conditional_modules_take_labels_and_depend_on_them():
    torch.manual_seed(0)
    g, d = Generator(GAN_CFG).eval(), Discriminator(GAN_CFG)
    z = torch.randn(5, GAN_CFG.z_dim)
    a, b = torch.zeros(5, dtype=torch.long), torch.full((5,), 3)
    with torch.no_grad():
        xa, xb = g(z, a), g(z, b)
    assert xa.shape == (5, 1, 16, 16) and xa.min() >= -1 and xa.max() <= 1
    assert (xa - xb).abs().max() > 1e-3  # same z, other label: another image
    assert d(xa, a).shape == (5, 1)
    assert not torch.allclose(d(xa, a), d(xa, b))  # the projection reads the label
    dec, vae = VAEDecoder(VAE_CFG), VAE(VAE_CFG)
    ya, yb = dec(z[:, :4], a), dec(z[:, :4], b)
    assert ya.shape == (5, 1, 16, 16) and (ya - yb).abs().max() > 1e-3
    logits, mu, logvar = vae(torch.rand(5, 1, 16, 16), torch.randn(5, 4), a)
    assert logits.shape == (5, 1, 16, 16) and mu.shape == logvar.shape == (5, 4)
    mu_b, _ = vae.encoder(torch.rand(5, 1, 16, 16), b)
    assert mu_b.shape == (5, 4)


def test_labels_are_required_by_conditional_modules_and_refused_by_others():
    g, dec = Generator(GAN_CFG), VAEDecoder(VAE_CFG)
    z = torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"generator is conditional \(4 classes\): pass labels"):
        g(z)
    with pytest.raises(ValueError, match="generator is conditional"):
        g.eval().for_inference()(z)
    with pytest.raises(ValueError, match=r"discriminator is conditional"):
        Discriminator(GAN_CFG)(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="decoder is conditional"):
        dec(z[:, :4])
    with pytest.raises(ValueError, match="generator is unconditional: call it without labels"):
        Generator(DCGANConfig(g_width=8))(torch.randn(2, 100), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="needs num_classes, which the family's prepare fills"):
        Generator(DCGANConfig(conditional=True))
    with pytest.raises(ValueError, match="num_classes=3 is for a conditional model"):
        VAEConfig(num_classes=3)


def test_unconditional_modules_keep_their_parameters():
    # the state-dict keys saved models have always had: conditional parts exist only when asked
    plain = Generator(DCGANConfig(g_width=8))
    cond = Generator(DCGANConfig(g_width=8, conditional=True, num_classes=10))
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"embed.weight"}
    assert not any("embed" in k for k in plain.state_dict())
    assert not any("embed" in k for k in Discriminator(DCGANConfig(d_width=4)).state_dict())
    assert plain.net[0].in_features == 100 and cond.net[0].in_features == 110
    v, cv = VAE(VAEConfig()), VAE(VAEConfig(conditional=True, num_classes=10))
    assert list(v.state_dict()) == list(cv.state_dict())  # one-hot columns: same keys
    assert v.decoder.net[0].in_features == 16 and cv.decoder.net[0].in_features == 26
    assert "conditional" in DCGANConfig().to_dict() and DCGANConfig().to_dict()["num_classes"] == 0


def test_inference_form_of_a_conditional_generator_equals_it():
    torch.manual_seed(0)
    g = Generator(GAN_CFG)
    with torch.no_grad():  # BatchNorm statistics far from the identity
        g.train()(torch.randn(64, 8) * 3, torch.arange(64) % K)
    g.eval()
    z, y = torch.randn(12, 8), torch.arange(12) % K
    with torch.no_grad():
        want = g(z, y)
        got = g.for_inference(torch.float32)(z, y)
        got_bf16 = g.for_inference(torch.bfloat16)(z, y)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got_bf16 - want).abs().max() < 0.1


# --- training ---------------------------------------------------------------------------------


def test_conditional_gan_training_lowers_the_discriminator_loss():
    images, labels = squares()
    cfg = GANTrainConfig(
        batch_size=16, epochs=3, steps_per_epoch=20, lr=1e-3, beta1=0.5, bf16=False
    )
    gan, history = train_gan(images, GAN_CFG, cfg, CPU, labels=labels)
    assert history[-1]["loss_d"] < history[0]["loss_d"]
    assert all(np.isfinite(h["loss_g"]) for h in history)
    out = ImageGenerator(gan.generator).generate(40, seed=0)  # classes in turn
    per_class = quadrant_means(out).reshape(10, K, K).mean(axis=0)  # (label, quadrant)
    assert per_class.argmax(axis=1).tolist() == list(range(K))  # each label draws its square
    with pytest.raises(ValueError, match="a conditional DCGAN trains on labelled images"):
        train_gan(images, GAN_CFG, cfg, CPU)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        train_gan(images, GAN_CFG, cfg, CPU, labels=labels + 1)


def test_conditional_vae_learns_and_its_labels_steer_the_images():
    images, labels = squares(128)
    train = TrainConfig(batch_size=32, steps=60, lr=3e-3, grad_clip=0.0, log_every=20, bf16=False)
    job = VAEJob(images, VAE_CFG, train, CPU, images[:32], labels=labels, val_labels=labels[:32])
    history = fit(job, train.steps, log_every=20, eval_every=60)
    assert history[-1]["loss"] < history[0]["loss"]
    assert np.isfinite(history[-1]["val_neg_elbo"])
    out = ImageGenerator(job.model.decoder).generate(40, seed=0)  # classes in turn
    per_class = quadrant_means(out).reshape(10, K, K).mean(axis=0)  # (label, quadrant)
    assert per_class.argmax(axis=1).tolist() == list(range(K))  # each label draws its square
    with pytest.raises(ValueError, match="a conditional VAE trains on labelled images"):
        VAEJob(images, VAE_CFG, train, CPU, images[:32], labels=labels)


# --- generation -------------------------------------------------------------------------------


def test_unconditional_generation_is_the_module_applied_to_the_latents(monkeypatch):
    # in fp32, whatever this CPU offers: bf16 (where measured faster) rounds to 8 bits
    monkeypatch.setattr(images_mod, "bf16_supported", lambda device: False)
    torch.manual_seed(0)
    dcgan = Generator(DCGANConfig(z_dim=8, g_width=8, image_size=8)).eval()
    vae = VAEDecoder(VAEConfig(z_dim=4, width=8, image_size=8)).eval()
    for module, net in ((dcgan, dcgan.for_inference(torch.float32)), (vae, vae)):
        gen = ImageGenerator(module)
        assert gen.num_classes == 0
        got = gen.generate(10, seed=5)
        with torch.no_grad():  # the old way: one batch of all the latents through the module
            want = ((net(latents(10, module.cfg.z_dim, 5)).float() + 1) / 2).clamp(0, 1)
        if not torch.backends.mkldnn.is_available() or gen.module is vae:
            np.testing.assert_array_equal(got, want.numpy())
        # oneDNN picks its fp32 convolution kernels by shape and thread count: on an AVX-512
        # Zen 5 the same images differ by up to 3e-5 (summation order), never more
        np.testing.assert_allclose(got, want.numpy(), atol=FP32_ATOL)
        out = gen.predict(pd.DataFrame({"n": [3], "seed": [5]}), {"labels": ""})
        assert out["label"].tolist() == [-1, -1, -1]
        with pytest.raises(LabelsError, match="asked of an unconditional model"):
            gen.predict(pd.DataFrame({"n": [3], "seed": [5]}), {"labels": "1"})
        with pytest.raises(LabelsError, match="unconditional"):
            gen.generate(3, 0, labels=np.zeros(3, np.int64))


def test_conditional_generation_is_seeded_per_item_and_checks_labels():
    torch.manual_seed(0)
    gen = ImageGenerator(Generator(GAN_CFG))
    assert gen.num_classes == K
    y = np.array([0, 1, 2, 3, 3, 2, 1], np.int64)
    a = gen.generate(7, seed=1, labels=y, batch_size=7)
    b = gen.generate(7, seed=1, labels=y, batch_size=3)
    np.testing.assert_allclose(a, b, atol=1e-6)  # item i is the same whatever the batch size
    many = generate_images(gen.module, 7, 1, batch_size=2, workers=2, labels=y)
    np.testing.assert_array_equal(many, generate_images(gen.module, 7, 1, 2, workers=1, labels=y))
    with torch.no_grad():  # item i: latent i of the seed, with label i
        want = gen.module.for_inference()(latents(7, 8, 1), torch.from_numpy(y))
    np.testing.assert_allclose(a, ((want + 1) / 2).clamp(0, 1).numpy(), atol=FP32_ATOL)
    balanced = gen.generate(8, seed=1)  # no labels: the classes in turn
    np.testing.assert_allclose(balanced, gen.generate(8, 1, labels=np.arange(8) % K), atol=1e-6)
    with pytest.raises(LabelsError, match="label 4 is out of range"):
        gen.generate(2, 0, labels=np.array([0, 4]))
    with pytest.raises(LabelsError, match=r"labels must be \(3,\) integers"):
        gen.generate(3, 0, labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown generation option.*guidance"):
        gen.generate(2, 0, guidance=2.0)


def test_predict_asks_for_the_labels_of_its_params():
    torch.manual_seed(0)
    gen = ImageGenerator(VAEDecoder(VAE_CFG))
    request = pd.DataFrame({"n": [3, 2], "seed": [0, 4]})
    out = gen.predict(request, {"labels": "3"})
    assert out["label"].tolist() == [3] * 5
    assert list(out.columns) == [
        "request",
        "index",
        "seed",
        "label",
        "height",
        "width",
        "png_base64",
    ]
    mixed = gen.predict(request, {"labels": "1,2"})
    assert mixed["label"].tolist() == [1, 2, 1, 1, 2]  # the pattern restarts in each request
    none = gen.predict(request, {"labels": ""})  # a conditional model spreads over its classes
    assert none["label"].tolist() == [-1] * 5
    per_row = gen.predict(request.assign(labels=["2", None]), {"labels": "3"})
    assert per_row["label"].tolist() == [2, 2, 2, 3, 3]
    assert gen.predict(request)["png_base64"].tolist() == none["png_base64"].tolist()
    with pytest.raises(LabelsError, match="label 9 is out of range"):
        gen.predict(request, {"labels": "9"})
    with pytest.raises(ValueError, match="seed cannot be a param: give n and seed as columns"):
        gen.predict(request, {"labels": "", "seed": 3})
    with pytest.raises(ValueError, match="unknown generation option.*top_k"):
        gen.predict(request, {"top_k": 3})


# --- families -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_conditional_presets_train_save_load_and_predict(tmp_path, name):
    family = families.get(name)
    assert family.params_example == {"labels": ""}
    assert {"smoke-conditional", "cpu-conditional"} <= set(family.presets)
    assert family.preset("cpu-conditional").model.conditional
    data = tiny_images(n=80, classes=3)
    pics = torch.from_numpy(data.pixels)
    labels = torch.from_numpy(data.labels)
    train = TrainData(
        images=pics, val_images=pics[:12], labels=labels, val_labels=labels[:12], num_classes=3
    )
    r = engine.train_model(
        family,
        "smoke-conditional",
        train,
        CPU,
        tmp_path / "ckpt",
        overrides={"steps": 2, "bf16": False},
    )
    assert r.model_cfg.num_classes == 3
    module, config = r.served_module()
    assert config["num_classes"] == 3 and config["conditional"] is True
    paths = save_model(tmp_path / "model", module, config)
    gen = family.load_generator(paths["weights"], paths["config"])
    assert gen.num_classes == 3
    for a, b in zip(module.state_dict().values(), gen.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    y = np.array([2, 0, 1], np.int64)
    np.testing.assert_array_equal(
        gen.generate(3, 7, labels=y), ImageGenerator(module).generate(3, 7, labels=y)
    )
    out = gen.predict(pd.DataFrame(family.input_example), {"labels": "2"})
    assert out["label"].tolist() == [2] * family.input_example["n"][0]
    if name == "vae":  # its evaluation's reconstructions, each image with its own label
        sheet = reconstructions_image(tmp_path / "ckpt", image_table(data), family.model_config)
        assert sheet.size[0] > 0
    # an unconditional preset ignores the labels the data carries
    plain = engine.train_model(
        family, "smoke", train, CPU, tmp_path / "plain", overrides={"steps": 1, "bf16": False}
    )
    assert plain.model_cfg.num_classes == 0


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_num_classes_is_the_datas_and_a_one_class_dataset_is_refused(tmp_path, name):
    family = families.get(name)
    with pytest.raises(settings.SettingsError, match="model.num_classes is filled in from the"):
        settings.resolve(family, "smoke-conditional", {"model": {"num_classes": 3}})
    resolved = settings.resolve(family, "smoke", {"model": {"conditional": True}})
    assert resolved.model_cfg.conditional and resolved.model_cfg.num_classes == 0
    pics = torch.rand(16, 1, 28, 28)
    one = TrainData(
        images=pics, val_images=pics[:4], labels=torch.zeros(16, dtype=torch.long), num_classes=1
    )
    with pytest.raises(ValueError, match=f"a conditional {name} model .* has 1 class: ingest"):
        engine.train_model(family, "smoke-conditional", one, CPU, tmp_path / "c")
    with pytest.raises(ValueError, match="has 0 classes"):
        engine.train_model(family, "smoke-conditional", TrainData(images=pics), CPU, tmp_path / "d")
