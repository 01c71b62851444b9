"""StreamingGenerator: one latent frame per `step()`, text-to-video or video-to-video, LIPAR-pruned.

The server, the CLI and the benchmark all drive this one object; nobody copies the loop.
Data flow per latent frame (DESIGN.md §2): encode the source -> LIPAR mask -> SDEdit start ->
denoising steps over the kept tokens (pruned K/V recovered from the clean cache) -> restore the
pruned tokens from the previous clean latent -> cache pass at sigma = 0 -> decode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.backends import BACKENDS, CudaGraphRunner, EagerRunner, GraphedCall
from engine.checkpoint import WEIGHTS_DIR, load_dit, load_state
from engine.config import ModelConfig, get_config
from engine.dit import CausalDiT, patchify, unpatchify
from engine.kv_cache import RollingKVCache
from engine.sampler import add_noise, euler_step, next_sigmas
from engine.text import build_text_encoder
from engine.timing import StageTimer
from engine.vae import build_vae
from lipar.config import LiparConfig
from lipar.mask import MaskResult, StreamingMask
from lipar.motion import MotionCompensator
from lipar.prune import restore
from lipar.recovery import make_recovery, recover_kv

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    frames: list[np.ndarray]  # frames_per_latent video frames, uint8 (H, W, 3)
    stats: dict  # frame, mode, kept_ratio, kv_frames, stages_ms, total_ms
    mask: np.ndarray  # bool (h/2, w/2), True = token recomputed this frame


@dataclass
class _Prompt:
    states: Tensor  # (1, Lt, text_dim) on the device
    previous: Tensor | None = None  # states being blended away from
    frames_left: int = 0
    transition_frames: int = 0
    text: str = ""
    kv: list = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but no CUDA GPU is available")
    return torch.device(device)


class StreamingGenerator:
    def __init__(
        self,
        cfg: ModelConfig,
        dit: CausalDiT,
        vae: torch.nn.Module,
        text_encoder,
        device: torch.device,
        size: tuple[int, int],
        lipar: LiparConfig,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.height, self.width = size
        self.latent_h, self.latent_w = cfg.latent_size(*size)
        self.grid = (self.latent_h // 2, self.latent_w // 2)
        self.tokens = self.grid[0] * self.grid[1]
        self.frames_per_latent = cfg.frames_per_latent
        self.dit = dit.to(device=device, dtype=self.dtype).eval()
        self.vae = vae.to(device=device, dtype=self.dtype).eval()
        self.text_encoder = text_encoder
        self.seed = seed
        self.cache = RollingKVCache(cfg.layers, 1, self.tokens, cfg.heads, cfg.head_dim, cfg.window, device, self.dtype)
        if backend == "auto":
            backend = "cudagraph" if device.type == "cuda" else "torch"
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if backend == "cudagraph" and device.type != "cuda":
            raise ValueError("the cudagraph backend needs a CUDA device")
        self.backend = backend
        graphs = backend == "cudagraph"
        self.runner = CudaGraphRunner(self.dit, self.cache) if graphs else EagerRunner(self.dit, self.cache)
        # the VAE around the DiT: at 256x256 the tiny model's encode took 1.3 ms of launches (H200)
        graph_vae = graphs and self.vae.stateless
        self._encode = GraphedCall(self._encode_pixels) if graph_vae else self._encode_pixels
        self._decode = GraphedCall(self._decode_tokens) if graph_vae else self._decode_tokens
        self._mask_encode = None  # set_mask_encoder: another VAE's latent drives the mask
        self._timesteps: dict[float, Tensor] = {}  # one device tensor per sigma, made once
        rows, cols = torch.meshgrid(torch.arange(self.grid[0]), torch.arange(self.grid[1]), indexing="ij")
        self.grid_pos = torch.stack([rows.flatten(), cols.flatten()], dim=1).to(device)  # (N, 2)
        self.all_idx = torch.arange(self.tokens, device=device)
        self.lipar = lipar.resolved(cfg.lipar.tau_short, cfg.lipar.tau_long, cfg.lipar.tau_output)
        self.mask = StreamingMask(self.lipar, self.grid, device)
        self.motion = MotionCompensator(self.lipar, (self.latent_h, self.latent_w))  # camera motion (4.6b)
        self.prompt: _Prompt | None = None
        self.reset()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name: str = "tiny",
        device: str = "auto",
        lipar: LiparConfig | None = None,
        random_weights: bool = False,
        size: tuple[int, int] | None = None,
        seed: int = 0,
        weights: str | Path | None = None,
        text_encoder_path: str | Path | None = None,
        backend: str = "auto",
    ) -> StreamingGenerator:
        """Load a preset. Weights come from the repo (`engine/weights/<name>/`) or `weights`, a local
        folder holding dit.safetensors (and vae.safetensors). Nothing is ever downloaded; random
        weights only when asked for."""
        cfg = get_config(name)
        dev = resolve_device(device)
        size = size or (cfg.height, cfg.width)
        cfg.latent_size(*size)  # validates the size before anything heavy happens
        dit, vae = load_dit(name, weights, random_weights, seed), build_vae(cfg)
        if not random_weights:
            # a DiT-only folder (a training run's export) pairs with the shipped VAE it was trained on
            folder = Path(weights) if weights is not None else WEIGHTS_DIR / name
            vae_file = next(
                (f for f in (folder / "vae.safetensors", WEIGHTS_DIR / name / "vae.safetensors") if f.is_file()), None
            )
            if vae_file is None:
                log.warning("no vae.safetensors for %s: the VAE has random weights", name)
            else:
                load_state(vae, vae_file)
        text = build_text_encoder(cfg, path=text_encoder_path, random=random_weights and cfg.text_encoder != "minilm")
        return cls(cfg, dit, vae, text, dev, size, lipar or LiparConfig(), seed, backend)

    # ------------------------------------------------------------------ controls
    def set_prompt(self, text: str, transition_frames: int = 0) -> None:
        """Takes effect at the next latent frame, blended over `transition_frames` frames."""
        if not isinstance(transition_frames, int) or not 0 <= transition_frames <= 1000:
            raise ValueError(f"transition_frames must be an integer in [0, 1000], got {transition_frames!r}")
        states = self.text_encoder.encode(text)[None].to(self.device, self.dtype)
        previous = self._current_states() if self.prompt is not None and transition_frames > 0 else None
        # the output changes everywhere, the source may not: no restoring while the new prompt settles in
        self.mask.hold(transition_frames + self.lipar.warmup_frames)
        self.prompt = _Prompt(
            states, previous, transition_frames if previous is not None else 0, transition_frames, text
        )
        self.prompt.kv = self.dit.text_kv(states)

    def set_lipar(self, config: LiparConfig) -> None:
        self.lipar = config.resolved(self.cfg.lipar.tau_short, self.cfg.lipar.tau_long, self.cfg.lipar.tau_output)
        self.mask = StreamingMask(self.lipar, self.grid, self.device)  # starts by keeping everything
        self.motion = MotionCompensator(self.lipar, (self.latent_h, self.latent_w))
        self.recovery = make_recovery(self.lipar.recovery)

    def set_mask_encoder(self, name: str | None) -> None:
        """Drive LIPAR's mask from preset `name`'s shipped frame VAE (its latent of the latest source
        frame) instead of this model's source latent; None: this model's again. For timing a model with
        random weights at real scale, whose VAE hardly moves its latents (`bench --mask-encoder`); give
        that preset's thresholds in the LiparConfig. The extra encode is timed as part of "mask"."""
        if name is None:
            self._mask_encode = None
            return
        cfg = get_config(name)
        if cfg.vae != "frame" or cfg.latent_size(self.height, self.width) != (self.latent_h, self.latent_w):
            raise ValueError(f"mask encoder {name!r} must be a frame VAE with this model's latent size")
        vae = build_vae(cfg)
        load_state(vae, WEIGHTS_DIR / name / "vae.safetensors")
        vae = vae.to(device=self.device, dtype=self.dtype).eval()

        def encode_latest(frames: Tensor) -> Tensor:
            return self._encode_pixels(frames[:, -1:], vae)

        self._mask_encode = GraphedCall(encode_latest) if self.backend == "cudagraph" else encode_latest

    def reset(self) -> None:
        self.cache.reset()
        self.mask.reset()
        self.motion.reset()
        self.vae.reset()
        self.previous_clean: Tensor | None = None  # (1, N, D) tokens of the last clean latent
        self.recovery = make_recovery(self.lipar.recovery)  # per-stream state (the noisy-copy ablation's)
        self.noise = torch.Generator(device=self.device).manual_seed(self.seed)
        self.last_mode: str | None = None

    # ------------------------------------------------------------------ one latent frame
    @torch.inference_mode()
    def step(self, source: np.ndarray | Sequence[np.ndarray] | None = None) -> StepOutput:
        if self.prompt is None:
            raise RuntimeError("set_prompt() must be called before step()")
        mode = "t2v" if source is None else "v2v"
        if mode != self.last_mode:
            self.mask.reset()  # a mode switch is a scene cut for the mask: warm-up again
            self.motion.reset()
            self.recovery = make_recovery(self.lipar.recovery)
            self.last_mode = mode
        timer = StageTimer(self.device)
        t = self.cache.frames
        self.cache.append()
        context_frames = self.cache.context_frames

        source_tokens = frames_in = None
        if source is not None:
            with timer("encode"):
                frames_in = self._source_tensor(source)  # (1, T, H, W, 3) uint8
                source_latent = self._encode(frames_in)  # (1, C, h, w)
                source_tokens = patchify(source_latent)
        with timer("mask"):
            self.motion.observe(None if frames_in is None else frames_in[0, -1])
            if frames_in is not None and self._mask_encode is not None:
                source_latent = self._mask_encode(frames_in)  # what the mask compares; the DiT has source_tokens
            mask = self._mask(source_latent if source is not None else None)
        with timer("dit"):
            clean = self.denoise(t, source_tokens, mask.keep_idx, mask.pruned_idx, self._text_kv())
        if mask.reason != "disabled":
            with timer("mask"):  # the settled-output rule measures this frame's output for the next mask
                self.mask.observe_output(unpatchify(clean, self.latent_h, self.latent_w)[0], mask.keep)
        with timer("decode"):
            frames_out = self._decode(clean).cpu().numpy()
        stages = timer.read_ms()
        stats = {
            "frame": t,
            "mode": mode,
            "kept_ratio": mask.kept_ratio,
            "mask_reason": mask.reason,
            "motion": self.motion.stats(),
            "kv_frames": context_frames,
            "stages_ms": stages,
            "total_ms": sum(stages.values()),
        }
        return StepOutput(list(frames_out), stats, mask.keep.cpu().numpy())

    def encode_source(self, source: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        """uint8 (H, W, 3) frame(s) -> the source latent (1, C, h, w)."""
        return self._encode(self._source_tensor(source))

    def _encode_pixels(self, frames: Tensor, vae: torch.nn.Module | None = None) -> Tensor:
        """uint8 (1, T, H, W, 3) on the device -> latent (1, C, h, w) of `vae` (default: the model's)."""
        x = frames.permute(0, 1, 4, 2, 3).to(self.dtype) / 127.5 - 1.0
        return (self.vae if vae is None else vae).encode_step(x)

    def _decode_tokens(self, clean: Tensor) -> Tensor:
        """Clean tokens (1, N, D) -> uint8 frames (T, H, W, 3) on the device."""
        video = self.vae.decode_step(unpatchify(clean, self.latent_h, self.latent_w).to(self.dtype))
        frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(0, 2, 3, 1)

    def _source_tensor(self, source: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        """uint8 (H, W, 3) frame(s) -> uint8 (1, T, H, W, 3) on the device, at the generator's size."""
        import cv2

        frames = [source] if isinstance(source, np.ndarray) else list(source)
        if len(frames) == 1 and self.frames_per_latent > 1:
            frames = frames * self.frames_per_latent  # a still source: hold the frame
        if len(frames) != self.frames_per_latent:
            raise ValueError(f"expected {self.frames_per_latent} source frame(s) per step, got {len(frames)}")
        out = []
        for f in frames:
            if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError("a source frame must be a uint8 numpy array of shape (H, W, 3)")
            if min(f.shape[:2]) < 8:
                raise ValueError(f"source frame {f.shape[1]}x{f.shape[0]} is too small")
            if f.shape[:2] != (self.height, self.width):
                f = cv2.resize(f, (self.width, self.height), interpolation=cv2.INTER_AREA)
            out.append(torch.from_numpy(np.ascontiguousarray(f)))
        return torch.stack(out).to(self.device)[None]

    def _mask(self, source_latent: Tensor | None) -> MaskResult:
        everything = torch.ones(self.grid, dtype=torch.bool, device=self.device)
        if not self.lipar.enabled:
            return MaskResult(everything, self.all_idx, self.all_idx[:0], 1.0, "disabled")
        # text-to-video (no source): the mask decides from the outputs alone, or keeps all (`t2v` off)
        result = self.mask.update(None if source_latent is None else source_latent[0].float(), self.motion.current)
        if self.previous_clean is None:  # nothing to restore from: compute everything
            return MaskResult(everything, self.all_idx, self.all_idx[:0], 1.0, result.reason)
        return result

    def _text_kv(self) -> list:
        """Cross-attention K/V for the frame being generated now (blended while a transition runs)."""
        p = self.prompt
        if p.frames_left <= 0:
            return p.kv
        p.frames_left -= 1
        return p.kv if p.frames_left == 0 else self.dit.text_kv(self._current_states())

    def _current_states(self) -> Tensor:
        """Text states of the latest frame: the blend reaches the new prompt's on its last frame."""
        p = self.prompt
        if p.frames_left > 0:
            return torch.lerp(p.previous, p.states, 1.0 - p.frames_left / p.transition_frames)
        return p.states

    def positions(self, t: int, idx: Tensor) -> Tensor:
        """(K, 3) true (t, row, col) of flat token indices."""
        rc = self.grid_pos[idx]
        return torch.cat([torch.full_like(rc[:, :1], t), rc], dim=1)

    def _recover(self, t: int, pruned_idx: Tensor, source: tuple[Tensor, Tensor] | None) -> None:
        """Fill the current slot's pruned positions, all layers in one call: the clean K/V of the last
        clean frame, or `source` (k_pre, v), which the recovery mode chose."""
        cos, sin = self.dit.rope.cos_sin(self.positions(t, pruned_idx))
        dst_k, dst_v, dst_k_pre = self.cache.frame(self.cache.current_slot)
        if source is None:
            _, src_v, src_k_pre = self.cache.frame(self.cache.previous_slot)
        else:
            src_k_pre, src_v = source
        src_k_pre, src_v = self.motion.kv(src_k_pre, src_v)  # from where the content was (still: as is)
        recover_kv(src_k_pre, src_v, dst_k, dst_v, dst_k_pre, pruned_idx, cos, sin)

    def denoise(
        self, t: int, source_tokens: Tensor | None, keep_idx: Tensor, pruned_idx: Tensor, text_kv: list
    ) -> Tensor:
        """Denoise the kept tokens of frame t (its cache slot already opened), restore the pruned ones
        from the previous clean latent, run the cache pass. Returns the clean tokens (1, N, C*4)."""
        schedule = self.cfg.t2v_schedule if source_tokens is None else self.cfg.v2v_schedule
        sigmas = schedule.sigmas
        noise = torch.randn(
            (1, self.tokens, self.cfg.patch_dim), generator=self.noise, device=self.device, dtype=torch.float32
        )
        pruned = pruned_idx.numel() > 0
        if source_tokens is None:
            x = noise
        else:
            x = add_noise(source_tokens.float(), noise, sigmas[0])
        x = x[:, keep_idx] if pruned else x
        pos = self.positions(t, keep_idx)
        recovery = self.recovery
        key_mask = None
        if pruned:  # every mode starts from the clean previous frame's K/V at the pruned positions
            self._recover(t, pruned_idx, None)
            key_mask = recovery.key_mask(self.cache.valid_tokens, self.cache.current_slot * self.tokens, pruned_idx)
        refilled = False  # whether the pruned positions now hold something other than the clean copy
        write_idx = self.cache.token_index(self.cache.current_slot, keep_idx)
        steps = list(zip(sigmas, next_sigmas(sigmas))) if keep_idx.numel() else []  # all pruned: a still frame
        for i, (sigma, sigma_next) in enumerate(steps):
            source_kv = recovery.source(i) if pruned else None
            if source_kv is not None:
                self._recover(t, pruned_idx, source_kv)
                refilled = True
            timestep = self._timestep(sigma)
            v = self.runner(x.to(self.dtype), pos, timestep, text_kv, write_idx, recovery.stores_step_kv, key_mask)
            x = euler_step(x, v.float(), sigma, sigma_next)
            recovery.after_step(i, self._slot_snapshot)
        recovery.end_frame()
        clean = restore(x, keep_idx, self.motion.tokens(self.previous_clean)) if pruned else x
        # cache pass: the clean frame's K/V (and K before RoPE) go into the cache for later frames
        if refilled:
            self._recover(t, pruned_idx, None)
        if keep_idx.numel():
            self.runner(x.to(self.dtype), pos, self._timestep(0.0), text_kv, write_idx, True, key_mask)
        self.cache.commit()
        self.previous_clean = clean
        return clean

    def _timestep(self, sigma: float) -> Tensor:
        if sigma not in self._timesteps:
            self._timesteps[sigma] = torch.full((1, 1), sigma * 1000.0, device=self.device)
        return self._timesteps[sigma]

    def _slot_snapshot(self) -> tuple[Tensor, Tensor]:
        _, v, k_pre = self.cache.frame(self.cache.current_slot)
        return k_pre.clone(), v.clone()
