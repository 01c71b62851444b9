"""Train the `tiny` causal DiT: rectified flow, per-frame noise levels, clean-context teacher forcing.

Each training sequence stacks two copies of a clip's latent tokens: a clean copy (noise
augmentation, timestep 0: what the cache pass writes at inference) and a noisy copy whose frames
have independent noise levels (diffusion forcing). A noisy frame attends to the clean frames in its
window (sink + last m) and to itself, exactly what it sees at inference through the rolling cache
(in a quarter of the steps to itself only); the loss is the velocity error on the noisy copy. Half
the clips are restyling pairs: their noisy frames lie on the video-to-video path from a recoloured
copy of the clip to the clip itself (restyle_start).

Clips are rendered on the GPU in pools (train/dataset.py), encoded once by the frozen VAE, and
their captions by MiniLM; each pool serves many steps, then is replaced.

    python -m train.train_dit --ckpt runs/dit --vae engine/weights/tiny/vae.safetensors \
        --export engine/weights/tiny/dit.safetensors --max-minutes 8
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from engine.attention import SequenceAttention, frame_causal_mask
from engine.checkpoint import load_state, save_state
from engine.config import ModelConfig, get_config
from engine.dit import CausalDiT, init_weights, patchify
from engine.sampler import add_noise, velocity_target
from train.common import annealing_step, load_checkpoint, pick_device, plot_curves, save_checkpoint, warmup_cosine

log = logging.getLogger(__name__)

CONTEXT_NOISE = 0.25  # largest noise level mixed into half of the context frames
# Share of steps whose noisy frames see no context at all. With context always there, a short run
# (5,700 GPU steps) learnt to continue the last frame and to ignore both the noisy input and the
# prompt at inference (34% colour-prompt following, frozen motion); without it, only text and the
# noisy frame say what to draw, as for a stream's first frame.
NO_CONTEXT_SHARE = 0.25
# Share of clips trained as restyling pairs: the noisy frames start from a recoloured copy of the
# clip (train.dataset.recolor) as video-to-video starts from its noised source, and the target is
# the clip its caption describes. Without them the model trusts the source's colours over the prompt
# (0% colour following in video-to-video after 12 GPU minutes).
RESTYLE_SHARE = 0.5
RESTYLE_MIN_START = 0.3  # lowest SDEdit start sigma trained: the target's source term grows as 1/sigma0
# SDEdit start sigmas trained in half of the restyling pairs (the rest: uniform above the frame's
# sigma), so that video-to-video can start at any of them and the schedule is chosen by measurement.
# The other clips are the identity pairs (target = source): their video-to-video path from an
# unchanged source is the plain rectified-flow path, at every start sigma.
V2V_STARTS = (0.5, 0.6, 0.67, 0.75)
# Extra loss weight on tokens that changed since the previous frame (moving objects). Copying the
# last frame costs a velocity error only there, a sixth of the tokens of a static-camera clip, and
# sessions 1-9 trained models that drew text-to-video objects standing still.
MOTION_WEIGHT = 3.0
MOTION_SCALE = 0.1  # per-token mean |latent change| at which a token counts as fully moving (objects: median 0.16)
# Restyling pairs see a context up to this many frames behind the clip (restyle clips only). With an
# exact context, 6,000 steps learnt to copy the last frame: a sub-pixel move per frame says nothing
# the noisy frame would contradict, so at inference the output froze while the source moved on.
MAX_CONTEXT_LAG = 4
# Noise levels of the one-step reconstructions that stand in for the clean context of a `self_context`
# share of the clips (own_reconstruction): at inference the cache holds the model's own outputs, and the
# shipped model's text-to-video objects smear along their path instead of moving (train.evaluate). Round 8
# (session 13, share 0.5, benchmarks/results/gpu_h200/tiny_round8.json) followed motion in 2 of 8 prompts
# against the shipped 4: DiTTrainConfig.self_context defaults to 0.
SELF_CONTEXT_SIGMA = (0.3, 0.7)


@dataclass(frozen=True)
class DiTTrainConfig:
    ckpt: Path
    vae: Path
    export: Path | None = None
    text_model: Path | None = None  # MiniLM folder (train/export_minilm.py) where the pip package is absent
    init: Path | None = None  # DiT weights to start from (fresh optimizer) when `ckpt` holds no checkpoint
    steps: int = 20000
    max_minutes: float = 8.0
    frames: int = 16
    batch_small: int = 48  # clips per step at 128x128
    batch_large: int = 8  # clips per step at 256x256
    large_every: int = 4  # one 256x256 step in this many; 0 = train at 128x128 only (CPU runs)
    pool_clips: int = 1024
    pool_steps: int = 300
    lr: float = 3e-4
    warmup: int = 300
    ema: float = 0.999  # of the exported weights; a run of only a few thousand steps wants ~0.99
    max_sink_gap: int = 1000  # random time gap after the sink frame: streams run far past training clips
    self_context: float = 0.0  # share of clips whose clean context is the model's own reconstruction
    # share of steps whose noisy frames see the clean sink frame(s) and themselves only (`training_masks`)
    sink_only: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.frames < 2 or self.batch_small < 1 or self.batch_large < 1 or self.pool_clips < 1:
            raise ValueError("frames must be >= 2 and batch/pool sizes >= 1")
        if not 0.0 <= self.self_context <= 1.0:
            raise ValueError(f"self_context is a share of clips in [0, 1], got {self.self_context}")
        if not 0.0 <= self.sink_only <= 1.0 - NO_CONTEXT_SHARE:
            raise ValueError(
                f"sink_only is a share of steps in [0, {1 - NO_CONTEXT_SHARE}] (the rest of the no-context "
                f"share), got {self.sink_only}"
            )


def sample_sigmas(cfg: ModelConfig, shape: tuple[int, ...], device) -> torch.Tensor:
    """Half from the inference schedules' exact sigmas (few-step use), half shifted-uniform."""
    exact = torch.tensor(cfg.t2v_schedule.sigmas + cfg.v2v_schedule.sigmas, device=device)
    pick = exact[torch.randint(len(exact), shape, device=device)]
    u = torch.rand(shape, device=device)
    shift = cfg.t2v_schedule.shift
    shifted = shift * u / (1 + (shift - 1) * u)
    return torch.where(torch.rand(shape, device=device) < 0.5, pick, shifted).clamp(1e-3, 1.0)


def clip_positions(frames: int, gh: int, gw: int, gap: int, device) -> torch.Tensor:
    """(frames * gh * gw, 3) positions; frames after the sink are shifted by `gap` in time."""
    t = torch.arange(frames, device=device)
    t = torch.where(t > 0, t + gap, t)
    rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    grid = torch.stack([rows.flatten(), cols.flatten()], 1)  # (N, 2)
    return torch.cat([t.repeat_interleave(gh * gw)[:, None], grid.repeat(frames, 1)], 1)


def restyle_start(
    x0: torch.Tensor, source: torch.Tensor, sigma: torch.Tensor, sigma0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean point and velocity offset of a restyling pair at noise level sigma <= sigma0.

    Video-to-video integrates a straight line from the noised source, sigma0 * noise + (1 - sigma0) *
    source, to the target x0. At sigma that line passes through sigma * noise + (1 - sigma) * (x0 +
    lam * d), d = source - x0, lam = sigma (1 - sigma0) / (sigma0 (1 - sigma)), with the velocity
    noise - x0 + (1 - sigma0) / sigma0 * d: returns (x0 + lam * d, (1 - sigma0) / sigma0 * d).
    """
    d = source - x0
    offset = (1 - sigma0) / sigma0
    lam = (sigma * offset / (1 - sigma).clamp_min(1e-6)).clamp(max=1.0)
    return x0 + lam * d, offset * d


def flow_loss(
    model: CausalDiT,
    latents: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    gap: int,
    sources: torch.Tensor | None = None,
    self_context: float = 0.0,
) -> torch.Tensor:
    """latents (B, F, C, h, w) clean, text (B, Lt, text_dim); mask from frame_causal_mask(copies=2);
    sources: recoloured latents of the same clips (restyling pairs, see restyle_start) or None;
    self_context: share of clips whose context frames are the model's own reconstructions."""
    cfg = model.cfg
    b, f, c, h, w = latents.shape
    x0 = patchify(latents.flatten(0, 1)).reshape(b, -1, cfg.patch_dim).float()  # (B, F*N, D)
    n = x0.shape[1] // f
    restyle = (torch.rand(b, device=x0.device) < RESTYLE_SHARE) & (sources is not None)
    # noise-augmented clean context: at inference the cache holds the model's own imperfect outputs,
    # and a context too faithful to the truth teaches copying the last frame
    aug = (torch.rand(b, f, device=x0.device) < 0.5) * torch.rand(b, f, device=x0.device) * CONTEXT_NOISE
    lag = torch.randint(0, MAX_CONTEXT_LAG + 1, (b,), device=x0.device) * restyle
    context = add_noise(lagged(x0, lag, f), torch.randn_like(x0), aug.repeat_interleave(n, 1)[..., None])
    text_kv = model.text_kv(text)
    pos = clip_positions(f, h // 2, w // 2, gap, x0.device)
    own = torch.rand(b, device=x0.device) < self_context
    if own.any():  # only those clips go through the extra forward
        own_kv = [(k[own], v[own]) for k, v in text_kv]
        context[own] = own_reconstruction(model, context[own], own_kv, pos, f)
    sigma = sample_sigmas(cfg, (b, f), x0.device).repeat_interleave(n, 1)  # (B, F*N)
    noise = torch.randn_like(x0)
    start, offset = x0, 0.0
    if sources is not None:
        source = patchify(sources.flatten(0, 1)).reshape(b, -1, cfg.patch_dim).float()
        source = torch.where(restyle[:, None, None], source, x0)  # the others: plain rectified flow
        # where video-to-video started: half at one of V2V_STARTS, half anywhere above
        lo = sigma.clamp_min(RESTYLE_MIN_START)
        uniform = lo + (1 - lo) * torch.rand_like(sigma)
        starts = torch.tensor(V2V_STARTS, device=x0.device)
        at_start = starts[torch.randint(len(V2V_STARTS), sigma.shape, device=x0.device)].maximum(lo)
        sigma0 = torch.where(torch.rand_like(sigma) < 0.5, at_start, uniform)
        start, offset = restyle_start(x0, source, sigma[..., None], sigma0[..., None])
    noisy = add_noise(start, noise, sigma[..., None])
    x = torch.cat([context, noisy], 1)
    timestep = torch.cat([torch.zeros_like(sigma), sigma * 1000.0], 1)
    v = model(x, pos.repeat(2, 1), timestep, text_kv, SequenceAttention(mask))
    err = (v[:, f * n :].float() - velocity_target(x0, noise) - offset).pow(2).mean(-1)  # (B, F*N)
    weight = motion_weight(x0, f)
    return (err * weight).sum() / weight.sum()


@torch.no_grad()
def own_reconstruction(
    model: CausalDiT, x: torch.Tensor, text_kv: list, pos: torch.Tensor, frames: int
) -> torch.Tensor:
    """(B, F*N, D) clean tokens -> the model's one-step estimate of each frame from itself noised to a
    sigma drawn in SELF_CONTEXT_SIGMA, each frame seeing only itself: a context that looks like the
    model's own outputs (blurred where it is unsure), without a costly autoregressive rollout."""
    b, length, _ = x.shape
    n = length // frames
    lo, hi = SELF_CONTEXT_SIGMA
    sigma = (lo + (hi - lo) * torch.rand(b, frames, device=x.device)).repeat_interleave(n, 1)[..., None]
    noisy = add_noise(x, torch.randn_like(x), sigma)
    own_frame = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool, device=x.device)] * frames)
    v = model(noisy, pos, sigma[..., 0] * 1000.0, text_kv, SequenceAttention(own_frame))
    return noisy - sigma * v.float()  # v = noise - x0, so x_sigma - sigma * v = x0


def motion_weight(x0: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, F*N) loss weights: 1 + MOTION_WEIGHT where a token changed since the previous frame."""
    b = x0.shape[0]
    per_frame = x0.reshape(b, frames, -1, x0.shape[-1])
    change = (per_frame[:, 1:] - per_frame[:, :-1]).abs().mean(-1)  # (B, F-1, N)
    change = torch.cat([torch.zeros_like(change[:, :1]), change], 1)  # the first frame: weight 1
    return (1 + MOTION_WEIGHT * (change / MOTION_SCALE).clamp(max=1.0)).reshape(b, -1)


def lagged(x: torch.Tensor, lag: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, F*N, D) tokens with clip i's frame t replaced by its frame max(t - lag[i], 0)."""
    b = x.shape[0]
    t = (torch.arange(frames, device=x.device)[None] - lag[:, None]).clamp_min(0)  # (B, F)
    per_frame = x.reshape(b, frames, -1, x.shape[-1])
    return per_frame[torch.arange(b, device=x.device)[:, None], t].reshape(x.shape)


def training_masks(frames: int, n: int, cfg: ModelConfig, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(with context, without, sink only): the inference view; the same with the noisy copy cut off
    from the clean one (each noisy frame then sees only itself); and with each noisy frame seeing only
    the clean sink frame(s) and itself. The clean copy (the cache pass) sees its window in all three.

    Why sink only: with the last frames in view, the direction and speed of a motion can be read off
    the context, so the prompt's motion words are never needed, and a session-13 check found the
    shipped model's text-to-video motion the same for "left", "right", "up" and "down" (it follows the
    seed). Seeing only the first frame, frame f must be drawn f steps along the named way."""
    with_context = frame_causal_mask(frames, n, cfg.window.sinks, cfg.window.m, device, copies=2)
    without = with_context.clone()
    without[frames * n :, : frames * n] = False
    sink_only = with_context.clone()
    is_sink = torch.arange(frames * n, device=device) // n < cfg.window.sinks  # clean key tokens of the sinks
    sink_only[frames * n :, : frames * n] &= is_sink
    return with_context, without, sink_only


class ClipPool:
    """Rendered, VAE-encoded, caption-encoded clips on the GPU; refreshed every `pool_steps` steps."""

    def __init__(self, tc: DiTTrainConfig, cfg: ModelConfig, vae, text_encoder, device) -> None:
        self.tc, self.cfg, self.vae, self.text, self.device = tc, cfg, vae, text_encoder, device
        self.next_seed = tc.seed * 10_000_000
        self.latents: dict[int, torch.Tensor] = {}
        self.sources: dict[int, torch.Tensor] = {}  # the same clips recoloured (restyling pairs)
        self.states: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def refresh(self) -> None:
        from train.dataset import caption, recolor, sample_clip

        for size in (128, 256) if self.tc.large_every else (128,):
            count = self.tc.pool_clips if size == 128 else max(self.tc.pool_clips // 4, self.tc.batch_large)
            params = [sample_clip(self.next_seed + i, self.tc.frames) for i in range(count)]
            captions = [caption(p, self.next_seed + i) for i, p in enumerate(params)]
            self.latents[size] = self._encode(params, size)
            self.sources[size] = self._encode([recolor(p, self.next_seed + i) for i, p in enumerate(params)], size)
            self.states[size] = self.text.encode_batch(captions).to(self.device, torch.bfloat16)
            self.next_seed += count

    def _encode(self, params: list, size: int, chunk: int = 64) -> torch.Tensor:
        """Render and VAE-encode clips: (len(params), T, C, h, w) bf16."""
        from train.dataset import render
        from train.train_vae import to_model_frames

        lat = []
        for i in range(0, len(params), chunk):
            video = render(params[i : i + chunk], size, self.device)  # (b, T, H, W, 3) uint8
            frames = to_model_frames(video)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                z = self.vae.encode(frames)
            lat.append(z.float().unflatten(0, video.shape[:2]).to(torch.bfloat16))
        return torch.cat(lat)

    def batch(self, size: int, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, caption states, recoloured latents) of `count` random pool clips."""
        idx = torch.randint(len(self.latents[size]), (count,), device=self.device)
        return self.latents[size][idx], self.states[size][idx], self.sources[size][idx]


def train(tc: DiTTrainConfig) -> dict:
    from engine.text import build_text_encoder
    from engine.vae import build_vae

    torch.manual_seed(tc.seed)
    device = pick_device(tc.device)
    cfg = get_config("tiny")
    tc.ckpt.mkdir(parents=True, exist_ok=True)
    vae = build_vae(cfg)
    load_state(vae, tc.vae)
    vae.to(device).eval()
    text = build_text_encoder(cfg, path=tc.text_model).encoder.to(device)  # batched, on the GPU

    model = CausalDiT(cfg)
    init_weights(model, tc.seed)
    model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(0.9, 0.95), weight_decay=0.01)
    step, history = 0, []
    state = load_checkpoint(tc.ckpt, device)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        log.info("resumed from %s at step %d", tc.ckpt, step)
    elif tc.init is not None:  # e.g. the exported weights of an earlier run whose checkpoint is gone
        load_state(model, tc.init)
        ema.load_state_dict(model.state_dict())
        log.info("initialised from %s", tc.init)

    def save() -> None:
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}
        save_checkpoint({**state, "step": step, "history": history}, tc.ckpt)
        plot_curves(tc.ckpt / "loss_dit.png", {"velocity MSE": history}, "tiny DiT training", ("velocity MSE",))
        if tc.export is not None:
            save_state(ema, tc.export, torch.float16)

    pool = ClipPool(tc, cfg, vae, text, device)
    pool.next_seed += step * 1000  # a resumed run sees new clips
    masks = {}
    start, running = time.time(), []
    last_save = start
    bar = tqdm(total=tc.steps, initial=step, desc="dit", unit="step")
    while step < tc.steps and time.time() - start < tc.max_minutes * 60:
        if step % tc.pool_steps == 0 or not pool.latents:
            pool.refresh()
        large = tc.large_every > 0 and step % tc.large_every == tc.large_every - 1
        size, count = (256, tc.batch_large) if large else (128, tc.batch_small)
        latents, states, sources = pool.batch(size, count)
        n = (latents.shape[-2] // 2) * (latents.shape[-1] // 2)
        if n not in masks:
            masks[n] = training_masks(tc.frames, n, cfg, device)
        gap = int(torch.randint(0, tc.max_sink_gap + 1, ()).item()) if torch.rand(()) < 0.5 else 0
        lr = warmup_cosine(
            annealing_step(step, tc.steps, time.time() - start, tc.max_minutes), tc.steps, tc.warmup, tc.lr
        )
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            r = float(torch.rand(()))
            mask = masks[n][1 if r < NO_CONTEXT_SHARE else 2 if r < NO_CONTEXT_SHARE + tc.sink_only else 0]
            loss = flow_loss(model, latents, states, mask, gap, sources, tc.self_context)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - tc.ema)
        running.append(loss.detach())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            value = torch.stack(running).mean().item()
            running.clear()
            history.append((step, value))
            bar.set_postfix(loss=f"{value:.4f}")
        if time.time() - last_save > 300:  # every 5 minutes: a killed run loses little
            save()
            last_save = time.time()
    bar.close()
    save()
    summary = {
        "step": step,
        "final_loss": history[-1][1] if history else None,
        "minutes_this_call": (time.time() - start) / 60,
        "history": history,  # (step, mean velocity MSE over the last 50 steps)
    }
    (tc.ckpt / "summary_dit.json").write_text(json.dumps(summary, indent=1))
    log.info("dit training: %s", summary)
    return summary


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--export", type=Path, default=None)
    p.add_argument("--text-model", type=Path, default=None, help="MiniLM folder (default: the installed package)")
    p.add_argument("--init", type=Path, default=None, help="DiT weights to start from when --ckpt is empty")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--max-minutes", type=float, default=8.0)
    p.add_argument("--batch-small", type=int, default=48)
    p.add_argument("--batch-large", type=int, default=8)
    p.add_argument("--large-every", type=int, default=4, help="one 256x256 step in this many; 0: 128x128 only")
    p.add_argument("--pool-clips", type=int, default=1024)
    p.add_argument("--pool-steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights (short runs: lower)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--self-context", type=float, default=0.0, help="share of clips with the model's own context")
    p.add_argument("--sink-only", type=float, default=0.0, help="share of steps whose frames see only the sink frame")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    fields = {k: v for k, v in vars(a).items()}
    train(DiTTrainConfig(**fields))


if __name__ == "__main__":
    main()
