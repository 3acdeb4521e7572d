"""TokenizerLoss: terms, GAN schedule and official GAN details, gradient routing, NaN reporting."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from adaptok.losses.adversarial import LeCamRegularizer, discriminator_adversarial_loss
from adaptok.losses.tokenizer_loss import NonFiniteLossError, TokenizerLoss
from adaptok.nn import AdapTokTokenizer, Discriminator, TokenizerOutput


class FakePerceptual(nn.Module):
    """LPIPS stand-in with the same call signature: (N, 3, H, W) in [-1, 1] x 2 -> (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.dropout = nn.Dropout(0.5)
        self.frames_seen: list[int] = []

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self.frames_seen.append(x.shape[0])
        difference = self.dropout(self.features(x) - self.features(y))
        return difference.pow(2).mean(dim=(1, 2, 3))


def _setup(**loss_args: object) -> tuple[AdapTokTokenizer, TokenizerLoss, Tensor, TokenizerOutput]:
    torch.manual_seed(0)
    tokenizer = AdapTokTokenizer(
        num_frames=8,
        image_size=32,
        patch_size=(4, 8, 8),
        tokens_per_block=8,
        width=32,
        depth=1,
        heads=2,
        codebook_size=32,
        code_dim=4,
        prior_depth=1,
        prior_width=16,
        prior_heads=2,
    ).train()
    discriminator = partial(Discriminator, width=32, depth=1, heads=2)  # geometry: tokenizer's
    args = dict(perceptual=FakePerceptual(), discriminator=discriminator, prior_weight=0.06)
    args.update(loss_args)
    loss = TokenizerLoss(**args).train()  # type: ignore[arg-type]
    loss.build_discriminator(
        tokenizer.num_frames, tokenizer.image_size, tokenizer.in_channels, tokenizer.patch_size
    )
    real = torch.rand(2, 3, 8, 32, 32)
    output = tokenizer(real, torch.tensor([[3, 8], [1, 5]]))
    return tokenizer, loss, real, output


def test_generator_loss_terms_and_gradients() -> None:
    tokenizer, loss, real, output = _setup(disc_start=10)
    total, terms = loss.generator_loss(real, output, step=9)
    assert "gan" not in terms
    assert {"l1", "perceptual", "vq", "prior", "commit", "codebook", "total"} <= set(terms)
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    expected = terms["l1"] + terms["perceptual"] + 0.1 * terms["vq"] + 0.06 * terms["prior"]
    assert torch.allclose(total, expected)

    total, terms = loss.generator_loss(real, output, step=10)
    assert "gan" in terms
    total.backward()
    assert tokenizer.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in loss.discriminator.parameters())
    assert all(p.requires_grad for p in loss.discriminator.parameters())
    assert not any(p.requires_grad for p in loss.perceptual.parameters())


def test_mse_term_is_weighted_and_off_by_default() -> None:
    _, loss, real, output = _setup(disc_start=10)
    assert "l2" not in loss.generator_loss(real, output, step=0)[1]
    _, loss, real, output = _setup(disc_start=10, l1_weight=0.0, l2_weight=2.0)
    total, terms = loss.generator_loss(real, output, step=0)
    assert torch.allclose(terms["l2"], (output.recon - real).pow(2).mean())
    expected = 2.0 * terms["l2"] + terms["perceptual"] + 0.1 * terms["vq"] + 0.06 * terms["prior"]
    assert torch.allclose(total, expected)


def test_perceptual_network_stays_in_eval_mode() -> None:
    _, loss, real, output = _setup()
    loss.train()
    assert not loss.perceptual.training
    first = loss.perceptual_loss(output.recon, real)
    assert torch.equal(first, loss.perceptual_loss(output.recon, real))


def test_perceptual_frame_subsampling() -> None:
    _, loss, real, output = _setup(perceptual_frames=3)
    loss.generator_loss(real, output, step=0)
    assert loss.perceptual.frames_seen == [2 * 3]


def test_discriminator_schedule_and_gradients() -> None:
    tokenizer, loss, real, output = _setup(disc_start=4, disc_every=5)
    assert loss.discriminator_loss(real, output.recon, step=3) == (None, {})
    assert loss.discriminator_loss(real, output.recon, step=5)[0] is None
    total, terms = loss.discriminator_loss(real, output.recon, step=9)
    assert total is not None and torch.isfinite(total)
    assert {"adversarial", "lecam", "logits_real", "logits_fake", "total"} <= set(terms)
    total.backward()
    assert loss.discriminator.head.weight.grad is not None
    # The reconstruction is detached: nothing reaches the tokenizer.
    assert all(p.grad is None for p in tokenizer.parameters())


def test_discriminator_is_built_with_the_tokenizers_geometry() -> None:
    """The factory holds the discriminator's own settings; the clip geometry is given once."""
    loss = TokenizerLoss(discriminator=partial(Discriminator, width=32, depth=1, heads=2))
    assert loss.discriminator is None
    with pytest.raises(RuntimeError, match="not built yet"):
        loss.gan_active(0)
    built = loss.build_discriminator(8, 32, 3, [2, 8, 8])
    assert built is loss.discriminator
    assert (built.input_shape, built.patch_size) == ((3, 8, 32, 32), (2, 8, 8))
    assert list(built.state_dict())[0] == "cls_token"
    assert any(k.startswith("discriminator.") for k in loss.state_dict())
    assert loss.build_discriminator(8, 32, 3, (2, 8, 8)) is built  # again: the same one
    with pytest.raises(
        ValueError, match=r"built with image_size=32 but the tokenizer has image_size=64"
    ):
        loss.build_discriminator(8, 64, 3, (2, 8, 8))
    stating = TokenizerLoss(discriminator=partial(Discriminator, num_frames=16, width=32))
    with pytest.raises(ValueError, match="states num_frames=16 and the tokenizer has num_frames=8"):
        stating.build_discriminator(8, 32, 3, (2, 8, 8))
    with pytest.raises(TypeError, match="not a built network"):
        TokenizerLoss(discriminator=built)  # type: ignore[arg-type]
    assert TokenizerLoss().build_discriminator(8, 32, 3, (2, 8, 8)) is None
    assert TokenizerLoss(discriminator=Discriminator).build_discriminator(
        16, 64, 3, (4, 8, 8)
    ).input_shape == (3, 16, 64, 64)


def test_lecam_ema_updates_in_training_only() -> None:
    lecam = LeCamRegularizer(decay=0.5)
    lecam(torch.tensor([2.0, 2.0]), torch.tensor([-2.0, -2.0]))
    assert lecam.ema_real.item() == 1.0 and lecam.ema_fake.item() == -1.0
    lecam.eval()
    value = lecam(torch.tensor([0.0]), torch.tensor([0.0]))
    assert lecam.ema_real.item() == 1.0
    assert torch.isclose(value, torch.tensor(2.0))


def test_non_finite_generator_loss_names_step_and_term() -> None:
    _, loss, real, output = _setup()
    output.recon = output.recon.detach().clone()
    output.recon[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 17.*'l1'") as error:
        loss.generator_loss(real, output, step=17)
    assert error.value.step == 17 and error.value.term == "l1"


def test_non_finite_vq_and_discriminator_losses() -> None:
    _, loss, real, output = _setup(perceptual=None, discriminator=None)
    output.vq_loss = torch.tensor(float("inf"))
    with pytest.raises(NonFiniteLossError, match="'vq'"):
        loss.generator_loss(real, output, step=3)
    _, loss, real, output = _setup()
    real[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 0.*'adversarial'"):
        loss.discriminator_loss(real, output.recon, step=0)


@pytest.mark.weights
def test_with_the_real_lpips() -> None:
    lpips = pytest.importorskip("adaptok.metrics.lpips")
    weights = pytest.importorskip("adaptok.metrics.weights")
    try:
        perceptual = lpips.LPIPS("alex")
    except weights.WeightsUnavailableError as error:
        pytest.skip(f"LPIPS weights unavailable (run `make weights`): {error}")
    _, loss, real, output = _setup(perceptual=perceptual, perceptual_frames=2)
    total, terms = loss.generator_loss(real, output, step=0)
    assert torch.isfinite(terms["perceptual"]) and terms["perceptual"] > 0
    total.backward()
    assert not any(p.requires_grad for p in perceptual.parameters())


def test_lecam_on_batch_mean_logits_as_the_official_code() -> None:
    """Official lecam_reg: relu(mean(real) - ema_fake)^2 + relu(ema_real - mean(fake))^2 with
    the averages of the previous steps (updated afterwards)."""
    real, fake = torch.tensor([3.0, -1.0]), torch.tensor([-3.0, 1.0])  # means 1 and -1
    official = LeCamRegularizer(decay=0.5, on="batch_mean")
    official.ema_real.fill_(2.0)
    official.ema_fake.fill_(-2.0)
    value = official(real, fake)
    assert value.item() == pytest.approx((1 - -2) ** 2 + (2 - -1) ** 2)  # 18, old EMAs
    assert (official.ema_real.item(), official.ema_fake.item()) == (1.5, -1.5)
    # per sample (the suite's default), with the EMAs updated first: a different, larger value
    per_sample = LeCamRegularizer(decay=0.5)
    per_sample.ema_real.fill_(2.0)
    per_sample.ema_fake.fill_(-2.0)
    expected = ((3 + 1.5) ** 2 + (-1 + 1.5) ** 2) / 2 + ((1.5 + 3) ** 2 + (1.5 - 1) ** 2) / 2
    assert per_sample(real, fake).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="batch_mean"):
        LeCamRegularizer(on="per_batch")  # type: ignore[arg-type]


def test_two_sided_noisy_labels_as_the_official_ns_smooth() -> None:
    """Official targets: real 1 - |n| 0.15 (>= 0.7), fake |n| 0.15 (<= 0.3); BCEs summed."""
    logits = torch.zeros(100_000)  # BCE(0, t) = log 2 whatever t: check the targets via grad
    real = logits.clone().requires_grad_(True)
    fake = logits.clone().requires_grad_(True)
    torch.manual_seed(0)
    loss = discriminator_adversarial_loss(real, fake, label_noise=0.15, labels="two_sided")
    assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-5)  # a sum, not a mean
    loss.backward()
    n = logits.numel()
    real_targets = 0.5 - real.grad * n  # d BCE / d logit = (sigmoid(0) - t) / n
    fake_targets = 0.5 - fake.grad * n
    assert real_targets.min() >= 0.7 - 1e-4 and real_targets.max() <= 1.0 + 1e-4
    assert fake_targets.min() >= -1e-4 and fake_targets.max() <= 0.3 + 1e-4
    half_normal_mean = 0.15 * math.sqrt(2 / math.pi)  # E|n| 0.15 (the clamp trims ~5 %)
    assert fake_targets.mean().item() == pytest.approx(half_normal_mean, rel=0.03)
    assert (1 - real_targets).mean().item() == pytest.approx(half_normal_mean, rel=0.03)
    with pytest.raises(ValueError, match="two_sided"):
        discriminator_adversarial_loss(real, fake, labels="both")  # type: ignore[arg-type]


def test_official_gan_settings_reach_the_discriminator_loss() -> None:
    _, loss, real, output = _setup(
        disc_start=0, label_smoothing="two_sided", label_noise=0.15, lecam_on="batch_mean"
    )
    assert loss.lecam.on == "batch_mean" and loss.discriminator_due(0) and loss.gan_active(0)
    total, terms = loss.discriminator_loss(real, output.recon, step=0)
    assert torch.isclose(total, terms["adversarial"] + loss.lecam_weight * terms["lecam"])
    with pytest.raises(ValueError, match="label_smoothing"):
        _setup(label_smoothing="none")
