"""Train the tiny model's frame VAE (engine.vae.FrameVAE) on procedural clips rendered on the fly.

    python -m train.train_vae --ckpt runs/vae --export engine/weights/tiny/vae.safetensors \\
        --steps 4000 --max-minutes 7

Clips are rendered on the training device at each size (128 and 256 by default) into a pool that
every step partly refreshes (see FramePool), and the VAE fits the reconstruction (L1 + MSE + an
edge term) under bf16 autocast on CUDA. A checkpoint in --ckpt is resumed automatically;
--max-minutes stops training cleanly, so a long run can be split over several calls. Each call ends
with a held-out PSNR per size (clips from seeds the training never draws), per-channel latent
statistics stored into the VAE, and, with --export, fp16 safetensors the generator loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from train.common import annealing_step, load_checkpoint, pick_device, plot_curves, save_checkpoint, warmup_cosine
from train.dataset import HELDOUT_SEEDS_START, render, sample_clip

log = logging.getLogger(__name__)

_MAX_CLIPS = 1024  # clips per size per step; seeds of one step never overlap the next step's
_STATS_SEEDS = HELDOUT_SEEDS_START + 10_000_000  # latent statistics: held out, apart from the eval clips


@dataclass(frozen=True)
class VaeTrainConfig:
    steps: int = 4000
    lr: float = 1e-3
    warmup: int = 200
    sizes: tuple[int, ...] = (128, 256)
    frames_per_step: tuple[int, ...] = (256, 48)  # per size; 128 (the tiny model's size) gets more pixels
    clip_frames: int = 2  # frames rendered per clip: fewer frames per clip = more varied batches
    reuse: int = 4  # each rendered frame is trained on this many times on average (see FramePool)
    save_every: int = 500
    log_every: int = 50
    eval_clips: int = 32
    eval_frames: int = 4
    stats_frames: int = 512
    seed: int = 0
    max_minutes: float | None = None  # training time limit for this call (evaluation and export add ~1 min)
    edge_weight: float = 0.5
    widths: tuple[int, int, int] | None = None  # FrameVAE widths/blocks; None: the tiny config's
    blocks: tuple[int, int, int] | None = None
    init: Path | None = None  # VAE weights to start from when the checkpoint folder is empty
    # train the decoder only: the encoder, and so the latents a DiT was trained on, stay as `init`'s
    decoder_only: bool = False

    def __post_init__(self) -> None:
        positive = ("steps", "warmup", "clip_frames", "reuse", "save_every", "log_every", "eval_clips", "eval_frames")
        for name in (*positive, "stats_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.sizes or any(s < 8 or s % 8 for s in self.sizes):
            raise ValueError(f"sizes must be positive multiples of 8 (the VAE downsamples 8x), got {self.sizes}")
        if len(self.frames_per_step) != len(self.sizes) or min(self.frames_per_step) < 1:
            raise ValueError(
                f"frames_per_step needs one positive count per size {self.sizes}, got {self.frames_per_step}"
            )
        if max(self.frames_per_step) * self.reuse > _MAX_CLIPS * self.clip_frames:
            raise ValueError(f"frames_per_step * reuse may be at most {_MAX_CLIPS * self.clip_frames}")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if self.edge_weight < 0:
            raise ValueError(f"edge_weight must be >= 0, got {self.edge_weight}")
        if self.decoder_only and self.init is None:
            raise ValueError("decoder_only needs init: the weights whose encoder stays fixed")


def to_model_frames(video: Tensor) -> Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [-1, 1]; the permute leaves it channels-last."""
    return video.reshape(-1, *video.shape[-3:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def render_frames(seeds: list[int], clip_frames: int, count: int, size: int, device: torch.device) -> Tensor:
    """The first `count` frames of the clips drawn from `seeds`: uint8 (count, size, size, 3)."""
    video = render([sample_clip(s, clip_frames) for s in seeds], size, device)
    return video.flatten(0, 1)[:count]


def training_frames(cfg: VaeTrainConfig, step: int, size_index: int, device: torch.device, count: int) -> Tensor:
    """`count` new frames for one step at one size, uint8 (count, H, W, 3); seeds follow from (seed, step)."""
    clips = math.ceil(count / cfg.clip_frames)
    base = ((cfg.seed * 1_000_003 + step) * len(cfg.sizes) + size_index) * _MAX_CLIPS
    seeds = [(base + i) % HELDOUT_SEEDS_START for i in range(clips)]
    return render_frames(seeds, cfg.clip_frames, count, cfg.sizes[size_index], device)


class FramePool:
    """Rendered frames kept on the device, each trained on `cfg.reuse` times on average.

    Rendering is bound by Python (measured on an H200 host: ~50 ms for 256 frames at 128 against
    ~60 ms for the whole VAE step), so each step renders only 1/reuse of a batch over the oldest
    frames and draws the batch at random from the whole pool, half of it mirrored.
    """

    def __init__(self, cfg: VaeTrainConfig, size_index: int, device: torch.device, start_step: int) -> None:
        self.cfg, self.size_index, self.device = cfg, size_index, device
        self.batch = cfg.frames_per_step[size_index]
        self.fresh = math.ceil(self.batch / cfg.reuse)
        # negative steps: seeds no training step draws
        self.frames = training_frames(cfg, -1 - start_step, size_index, device, self.batch * cfg.reuse)
        self.oldest = 0
        self.generator = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + start_step * 8 + size_index)

    def draw(self, step: int) -> Tensor:
        """Refresh the pool, then a batch (batch, 3, H, W) in [-1, 1]."""
        n = len(self.frames)
        slots = torch.arange(self.oldest, self.oldest + self.fresh, device=self.device) % n
        self.frames[slots] = training_frames(self.cfg, step, self.size_index, self.device, self.fresh)
        self.oldest = (self.oldest + self.fresh) % n
        pick = torch.randperm(n, device=self.device, generator=self.generator)[: self.batch]
        x = to_model_frames(self.frames[pick])  # (batch, 3, H, W)
        mirror = torch.rand(self.batch, 1, 1, 1, device=self.device, generator=self.generator) < 0.5
        return torch.where(mirror, x.flip(-1), x)


def reconstruction_loss(recon: Tensor, target: Tensor, edge_weight: float) -> Tensor:
    """L1 + MSE + L1 of the horizontal and vertical pixel differences (keeps edges and texture sharp)."""
    diff = recon.float() - target
    edges = (diff[..., :, 1:] - diff[..., :, :-1]).abs().mean() + (diff[..., 1:, :] - diff[..., :-1, :]).abs().mean()
    return diff.abs().mean() + diff.pow(2).mean() + edge_weight * edges


def _roundtrip(vae, frames: Tensor) -> Tensor:
    return vae.decode(vae.encode(frames))


@torch.no_grad()
def evaluate_psnr(vae, cfg: VaeTrainConfig, device: torch.device) -> dict[int, float]:
    """Mean per-frame PSNR (dB, on uint8 frames as the generator outputs them) on held-out clips, per size."""
    vae.eval()
    out = {}
    for size in cfg.sizes:
        psnrs = []
        for start in range(0, cfg.eval_clips, 16):
            seeds = [HELDOUT_SEEDS_START + i for i in range(start, min(start + 16, cfg.eval_clips))]
            frames = to_model_frames(render_frames(seeds, cfg.eval_frames, len(seeds) * cfg.eval_frames, size, device))
            with _autocast(device):
                recon = _roundtrip(vae, frames)
            quantised = ((recon.float().clamp(-1, 1) + 1) * 127.5).round()
            mse = (quantised - (frames + 1) * 127.5).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-4)
            psnrs.append(10 * torch.log10(255.0**2 / mse))
        out[size] = torch.cat(psnrs).mean().item()
    vae.train()
    return out


@torch.no_grad()
def measure_latent_stats(vae, cfg: VaeTrainConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (C,) of the raw latents over held-out frames at every size."""
    vae.eval()
    channels = vae.latent_channels
    vae.set_latent_stats(torch.zeros(channels), torch.ones(channels))  # encode() now returns raw latents
    total, total_sq, n = torch.zeros(channels, device=device), torch.zeros(channels, device=device), 0
    per_size = max(1, cfg.stats_frames // len(cfg.sizes))
    for size_index, size in enumerate(cfg.sizes):
        for start in range(0, per_size, 64):
            count = min(64, per_size - start)
            seeds = [_STATS_SEEDS + size_index * 100_000 + start + i for i in range(count)]
            with _autocast(device):
                raw = vae.encode(to_model_frames(render_frames(seeds, 1, count, size, device))).float()  # (N, C, h, w)
            total += raw.sum(dim=(0, 2, 3))
            total_sq += raw.pow(2).sum(dim=(0, 2, 3))
            n += raw.shape[0] * raw.shape[2] * raw.shape[3]
    mean = total / n
    std = (total_sq / n - mean.pow(2)).clamp_min(1e-8).sqrt()
    vae.train()
    return mean.cpu(), std.cpu()


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train(
    cfg: VaeTrainConfig,
    ckpt_dir: str | Path,
    export: str | Path | None = None,
    device: str = "auto",
    compile_model: bool = False,
) -> dict:
    """Train (resuming from `ckpt_dir`), evaluate, store latent stats, export. Returns a summary dict."""
    from engine.checkpoint import load_state, save_state
    from engine.config import get_config
    from engine.vae import build_vae

    started = time.monotonic()
    dev = pick_device(device)
    ckpt_dir = Path(ckpt_dir)
    torch.manual_seed(cfg.seed)
    model_cfg = get_config("tiny")
    model_cfg = dataclasses.replace(
        model_cfg, vae_widths=cfg.widths or model_cfg.vae_widths, vae_blocks=cfg.blocks or model_cfg.vae_blocks
    )
    vae = build_vae(model_cfg).to(dev).train()
    if cfg.decoder_only:
        vae.encoder.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=1e-4, fused=dev.type == "cuda")
    state = load_checkpoint(ckpt_dir)
    history: dict[str, list] = {"loss": []}  # name -> [(step, value)], one plot each
    start_step = 0
    if state is not None:
        try:
            vae.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(f"checkpoint in {ckpt_dir} does not fit the current FrameVAE: {e}") from None
        optimizer.load_state_dict(state["optimizer"])
        start_step, history = state["step"], state["history"]
        log.info("resumed %s at step %d", ckpt_dir, start_step)
    elif cfg.init is not None:
        load_state(vae, cfg.init)
        log.info("initialised from %s", cfg.init)
    # static shapes, one graph per size: with dynamic ones compiling took 160 s on an H200 for a 7%
    # faster step, so compiling only pays in long runs
    roundtrip = torch.compile(_roundtrip, dynamic=False) if compile_model else _roundtrip

    def save(step: int) -> None:
        save_checkpoint(
            {"step": step, "model": vae.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
             "config": dataclasses.asdict(cfg)},
            ckpt_dir,
        )  # fmt: skip
        plot_curves(ckpt_dir / "loss.png", history, f"FrameVAE, sizes {cfg.sizes}", log_scale=("loss",))

    pixels = [n * s * s for n, s in zip(cfg.frames_per_step, cfg.sizes, strict=True)]
    weights = [p / sum(pixels) for p in pixels]
    pools = [FramePool(cfg, i, dev, start_step) for i in range(len(cfg.sizes))]
    step = start_step
    running = torch.zeros((), device=dev)
    since_log, log_clock = 0, time.monotonic()
    bar = tqdm(total=cfg.steps, initial=start_step, desc="vae", unit="step", dynamic_ncols=True)
    while step < cfg.steps:
        elapsed = time.monotonic() - started
        if cfg.max_minutes is not None and elapsed >= cfg.max_minutes * 60:
            log.info("--max-minutes reached at step %d", step)
            break
        schedule_step = annealing_step(step, cfg.steps, elapsed, cfg.max_minutes)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(schedule_step, cfg.steps, cfg.warmup, cfg.lr)
        optimizer.zero_grad(set_to_none=True)
        for pool, weight in zip(pools, weights, strict=True):
            frames = pool.draw(step)
            with _autocast(dev):
                recon = roundtrip(vae, frames)
            loss = reconstruction_loss(recon, frames, cfg.edge_weight) * weight
            loss.backward()
            running += loss.detach()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        since_log += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = running.item() / since_log  # the only host sync of the loop
            rate = since_log * sum(cfg.frames_per_step) / (time.monotonic() - log_clock)
            history["loss"].append((step, mean_loss))
            bar.set_postfix(loss=f"{mean_loss:.4f}", frames_per_s=f"{rate:.0f}")
            running.zero_()
            since_log, log_clock = 0, time.monotonic()
        if step % cfg.save_every == 0 and step < cfg.steps:
            save(step)
    bar.close()
    psnr = evaluate_psnr(vae, cfg, dev)
    for size, value in psnr.items():
        history.setdefault(f"held-out PSNR {size} (dB)", []).append((step, value))
    save(step)
    if cfg.decoder_only:  # same encoder, same latents: keep the statistics the DiT was trained with
        mean, std = vae.shift.cpu(), 1.0 / vae.scale.cpu()
    else:
        mean, std = measure_latent_stats(vae, cfg, dev)
        vae.set_latent_stats(mean, std)
    summary = {
        "start_step": start_step,
        "step": step,
        "psnr_db": {str(k): round(v, 2) for k, v in psnr.items()},
        "latent_mean": [round(v, 4) for v in mean.tolist()],
        "latent_std": [round(v, 4) for v in std.tolist()],
        "minutes": round((time.monotonic() - started) / 60, 2),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    if export is not None:
        save_state(vae, export)  # fp16
        summary["export"] = str(export)
    (ckpt_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("VAE at step %d: held-out PSNR %s", step, summary["psnr_db"])
    return summary


def main(argv: list[str] | None = None) -> dict:
    defaults = VaeTrainConfig()
    p = argparse.ArgumentParser(description="Train the tiny model's frame VAE on procedural video.")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint folder; resumed if it holds one")
    p.add_argument("--export", type=Path, help="write the trained VAE here (fp16 safetensors)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the VAE round trip (the first steps then take minutes)")  # fmt: skip
    p.add_argument("--steps", type=int, default=defaults.steps, help="total steps of the whole run")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--warmup", type=int, default=defaults.warmup)
    p.add_argument("--sizes", type=int, nargs="+", default=list(defaults.sizes))
    p.add_argument("--frames-per-step", type=int, nargs="+", default=list(defaults.frames_per_step),
                   help="frames per step at each size")  # fmt: skip
    p.add_argument("--clip-frames", type=int, default=defaults.clip_frames)
    p.add_argument("--reuse", type=int, default=defaults.reuse, help="average uses of each rendered frame")
    p.add_argument("--save-every", type=int, default=defaults.save_every)
    p.add_argument("--log-every", type=int, default=defaults.log_every)
    p.add_argument("--eval-clips", type=int, default=defaults.eval_clips)
    p.add_argument("--eval-frames", type=int, default=defaults.eval_frames)
    p.add_argument("--stats-frames", type=int, default=defaults.stats_frames)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this long, and save")
    p.add_argument("--widths", type=int, nargs=3, default=None, help="FrameVAE widths (default: the tiny config's)")
    p.add_argument("--blocks", type=int, nargs=3, default=None, help="FrameVAE ResBlocks per stage")
    p.add_argument("--init", type=Path, default=None, help="VAE weights to start from when --ckpt is empty")
    p.add_argument("--decoder-only", action="store_true",
                   help="train the decoder only (needs --init): the latents a DiT learnt stay valid")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = VaeTrainConfig(
            steps=args.steps, lr=args.lr, warmup=args.warmup, sizes=tuple(args.sizes),
            frames_per_step=tuple(args.frames_per_step), clip_frames=args.clip_frames, reuse=args.reuse,
            save_every=args.save_every, log_every=args.log_every, eval_clips=args.eval_clips,
            eval_frames=args.eval_frames, stats_frames=args.stats_frames, seed=args.seed,
            max_minutes=args.max_minutes, widths=args.widths and tuple(args.widths),
            blocks=args.blocks and tuple(args.blocks), init=args.init, decoder_only=args.decoder_only,
        )  # fmt: skip
    except ValueError as e:
        p.error(str(e))
    summary = train(cfg, args.ckpt, args.export, args.device, args.compile)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
