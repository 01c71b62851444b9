"""Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * eps; the model predicts v = eps - x0."""

from __future__ import annotations

from torch import Tensor


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
