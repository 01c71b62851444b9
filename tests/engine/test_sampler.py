import pytest
import torch

from engine.config import SAMPLERS
from engine.sampler import EulerSampler, RenoiseSampler, SeededNoise, add_noise, build_sampler


class ListNoise:
    def __init__(self, tensors):
        self.tensors, self.shapes = list(tensors), []

    def __call__(self, shape):
        self.shapes.append(shape)
        return self.tensors.pop(0)


def test_euler_follows_the_straight_path_and_draws_no_noise():
    x0, eps = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    v = eps - x0  # the exact velocity on the path
    noise = ListNoise([])
    x = EulerSampler().step(add_noise(x0, eps, 0.9), v, 0.9, 0.4, noise)
    torch.testing.assert_close(x, add_noise(x0, eps, 0.4))
    assert noise.shapes == []


def test_renoise_predicts_x0_and_puts_it_back_with_fresh_noise():
    x0, eps, fresh = torch.randn(3, 1, 5, 8)
    v = eps - x0
    noise = ListNoise([fresh])
    x = RenoiseSampler().step(add_noise(x0, eps, 0.9), v, 0.9, 0.4, noise)
    torch.testing.assert_close(x, (1 - 0.4) * x0 + 0.4 * fresh)  # the old noise is gone
    assert noise.shapes == [(1, 5, 8)]
    last = RenoiseSampler().step(add_noise(x0, eps, 0.6), v, 0.6, 0.0, noise)
    torch.testing.assert_close(last, x0)  # the last step returns the clean prediction, no draw


def test_every_configured_sampler_builds_and_others_are_refused():
    assert {type(build_sampler(name)) for name in SAMPLERS} == {EulerSampler, RenoiseSampler}
    with pytest.raises(ValueError, match="unknown sampler 'ddpm'; choose one of: euler, renoise"):
        build_sampler("ddpm")


def test_seeded_noise_repeats_after_reset():
    noise = SeededNoise(seed=7, device="cpu")
    a = noise((2, 3))
    assert not torch.equal(a, noise((2, 3)))
    noise.reset()
    torch.testing.assert_close(noise((2, 3)), a)
