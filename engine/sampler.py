"""Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * eps; the model predicts v = eps - x0.

A sampler is one object with one method, `step(x, velocity, sigma, sigma_next, noise)`, so the
generator's loop reads the same for every sampler:
- `euler`: deterministic Euler steps of the flow ODE (what the `tiny` model is trained for);
- `renoise`: predict x0 = x - sigma * v and put it back at sigma_next with *fresh* Gaussian noise, as
  Self-Forcing and CausVid sample (`pipeline/causal_inference.py`); their few-step distilled models
  are trained for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from engine.config import SAMPLERS

NoiseSource = Callable[[tuple[int, ...]], Tensor]  # shape -> standard normal float32 noise on the device


def add_noise(x0: Tensor, noise: Tensor, sigma: Tensor | float) -> Tensor:
    """Forward process; also the SDEdit start for video-to-video (x0 = the source latent)."""
    return (1.0 - sigma) * x0 + sigma * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    return noise - x0


def euler_step(x: Tensor, velocity: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """One Euler step of the flow ODE; with sigma_next = 0 it is the clean estimate x - sigma * v."""
    return x + (sigma_next - sigma) * velocity


def next_sigmas(sigmas: list[float]) -> list[float]:
    """Pair each step's sigma with the next; the last step jumps straight to the clean estimate."""
    return sigmas[1:] + [0.0]


class Sampler(Protocol):
    def step(self, x: Tensor, velocity: Tensor, sigma: float, sigma_next: float, noise: NoiseSource) -> Tensor:
        """x at sigma and the model's velocity there -> x at sigma_next (the clean latent when it is 0)."""
        ...


class EulerSampler:
    def step(self, x: Tensor, velocity: Tensor, sigma: float, sigma_next: float, noise: NoiseSource) -> Tensor:
        return euler_step(x, velocity, sigma, sigma_next)


class RenoiseSampler:
    def step(self, x: Tensor, velocity: Tensor, sigma: float, sigma_next: float, noise: NoiseSource) -> Tensor:
        x0 = x - sigma * velocity
        return x0 if sigma_next == 0 else add_noise(x0, noise(tuple(x.shape)), sigma_next)


def build_sampler(name: str) -> Sampler:
    if name == "euler":
        return EulerSampler()
    if name == "renoise":
        return RenoiseSampler()
    raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


class SeededNoise:
    """The generator's noise: standard normal draws from one seeded torch.Generator, in call order."""

    def __init__(self, seed: int, device: torch.device | str) -> None:
        self.seed = seed
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def __call__(self, shape: tuple[int, ...]) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)
