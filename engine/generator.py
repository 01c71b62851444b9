"""StreamingGenerator: one block of latent frames per `step()`, text-to-video or video-to-video, LIPAR-pruned.

The server, the CLI and the benchmark all drive this one object; nobody copies the loop.
Data flow per block (DESIGN.md §2): encode the source -> LIPAR mask per latent frame -> SDEdit start ->
denoising steps over the kept tokens of the block's frames, jointly (block-causal: they see each other
and the cache window; pruned K/V recovered from the clean cache) -> restore the pruned tokens from
the previous clean latent -> (video-to-video) anchor the block to the source where it agrees with it ->
cache pass at sigma = 0 over the whole block, with the decode beside it (on a GPU a second stream: the decode
needs the clean tokens, not the cache; engine/overlap.py).
A block is one latent frame for our frame-wise presets (lowest latency) and three for `self-forcing`
(as its released models were trained). Block size, attention window and sampler come from the preset;
each is one mechanism the loop calls: the cache's window, the sampler object, the noise source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.anchor import anchor_to_source
from engine.backends import BACKENDS, CudaGraphRunner, EagerRunner, GraphedCall
from engine.checkpoint import WEIGHTS_DIR, load_dit, load_state
from engine.config import KVWindow, ModelConfig, get_config, parse_window
from engine.dit import CausalDiT, patchify, unpatchify
from engine.kv_cache import RollingKVCache
from engine.overlap import Pending, SideStream
from engine.sampler import NoiseSource, SeededNoise, add_noise, build_sampler, next_sigmas
from engine.text import build_text_encoder
from engine.timing import StageTimer
from engine.upload import HostUpload
from engine.vae import build_vae, load_vae_weights, native_cpu_bfloat16
from lipar.config import LiparConfig
from lipar.mask import MaskResult, StreamingMask
from lipar.motion import MotionCompensator
from lipar.prune import restore
from lipar.recovery import make_recovery, recover_kv

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    frames: list[np.ndarray]  # frames_per_block * frames_per_latent video frames, uint8 (H, W, 3)
    stats: dict  # frame, latent_frames, mode, kept_ratio, kv_frames, stages_ms, total_ms, ms_per_latent_frame
    mask: np.ndarray  # bool (h/2, w/2), True = token recomputed in the block's last frame
    latents: Tensor | None = None  # (1, frames_per_block, C, h, w) float32 clean latents of the block


@dataclass
class _Prompt:
    states: Tensor  # (1, Lt, text_dim) on the device
    previous: Tensor | None = None  # states being blended away from
    frames_left: int = 0
    transition_frames: int = 0
    text: str = ""
    kv: list = field(default_factory=list)
    recache: bool = False  # recompute the cached frames' K/V under this prompt at the next step


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
        self.block = cfg.frames_per_block
        self.dit = dit.to(device=device, dtype=self.dtype).eval()
        self.vae = vae.to(device=device, dtype=self.dtype).eval()
        # what the decode computes in: on a CPU with native bfloat16, bfloat16 where the VAE keeps its quality in
        # it (`cpu_bfloat16_decode`); set it to torch.float32 for the float32 decode
        bf16 = device.type == "cpu" and self.vae.cpu_bfloat16_decode and native_cpu_bfloat16()
        self.decode_dtype = torch.bfloat16 if bf16 else self.dtype
        self.text_encoder = text_encoder
        self.seed = seed
        self.cache = RollingKVCache(
            cfg.layers, 1, self.tokens, cfg.heads, cfg.head_dim, cfg.window, device, self.dtype, cfg.patch_dim
        )
        self.sampler = build_sampler(cfg.sampler)
        self.set_backend(backend)
        self._upload = HostUpload(device)
        self._side = SideStream(device)  # the decode beside the cache pass, the mask encoder beside the encoder
        self._mask_encode = None  # set_mask_encoder: another VAE's latent drives the mask
        self._timesteps: dict[float, Tensor] = {}  # one device tensor per sigma, made once
        rows, cols = torch.meshgrid(torch.arange(self.grid[0]), torch.arange(self.grid[1]), indexing="ij")
        self.grid_pos = torch.stack([rows.flatten(), cols.flatten()], dim=1).to(device)  # (N, 2)
        self.all_idx = torch.arange(self.tokens, device=device)
        self._keep_all = torch.ones(self.grid, dtype=torch.bool, device=device)  # read-only, shared
        self.lipar = self._resolve_lipar(lipar)
        self.mask = StreamingMask(self.lipar, self.grid, device)
        self.motion = MotionCompensator(self.lipar, (self.latent_h, self.latent_w))  # camera motion (4.6b)
        self.prompt: _Prompt | None = None
        self.reset()

    @property
    def frames_per_step(self) -> int:
        """Source (and output) video frames per `step()`: a block of latent frames."""
        return self.cfg.frames_per_step

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
        vae_path: str | Path | None = None,
        window: str | KVWindow | None = None,
        sampler: str | None = None,
    ) -> StreamingGenerator:
        """Load a preset. DiT weights come from the repo (`engine/weights/<name>/`) or `weights`: a
        checkpoint file (.safetensors, or a Self-Forcing-style .pt/.pth) or a folder holding dit.safetensors
        (and vae.safetensors). `vae_path` is a VAE file (e.g. TAEHV's taew2_1.pth). `window` (SINKS,M or
        global[:N]) and `sampler` override the preset's. Nothing is ever downloaded; random weights only
        when asked for."""
        cfg = get_config(name)
        if isinstance(window, str):
            window = parse_window(window, cfg.frames_per_block)
        cfg = replace(cfg, window=window or cfg.window, sampler=sampler or cfg.sampler)  # validates the sampler
        dev = resolve_device(device)
        size = size or (cfg.height, cfg.width)
        cfg.latent_size(*size)  # validates the size before anything heavy happens
        dit, vae = load_dit(name, weights, random_weights, seed), build_vae(cfg)
        if vae_path is not None:
            load_vae_weights(vae, vae_path)
        elif not random_weights:
            # a DiT-only folder (a training run's export) pairs with the shipped VAE it was trained on
            folders = [Path(weights)] if weights is not None and Path(weights).is_dir() else []
            files = [f / "vae.safetensors" for f in (*folders, WEIGHTS_DIR / name)]
            vae_file = next((f for f in files if f.is_file()), None)
            if vae_file is None:
                log.warning("no VAE weights for %s (give --vae FILE): the VAE has random weights", name)
            else:
                load_vae_weights(vae, vae_file)
        text = build_text_encoder(cfg, path=text_encoder_path, random=random_weights and cfg.text_encoder != "minilm")
        return cls(cfg, dit, vae, text, dev, size, lipar or LiparConfig(), seed, backend)

    # ------------------------------------------------------------------ controls
    def set_prompt(self, text: str, transition_frames: int = 0, recache: bool = False) -> None:
        """Takes effect at the next step, blended over `transition_frames` steps. `recache` (LongLive's fix
        for switch artifacts): the next step first recomputes the cached frames' K/V under the new prompt
        (its cost is `stages_ms["recache"]`), so the context no longer carries the old prompt."""
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
        self.prompt.recache = recache

    def _resolve_lipar(self, config: LiparConfig) -> LiparConfig:
        if self.block > 1 and config.enabled and config.motion != "off":
            raise ValueError(
                f"LIPAR motion compensation follows the camera frame by frame: it needs frames_per_block 1, "
                f"and {self.cfg.name} denoises {self.block} latent frames per block"
            )
        return config.resolved(self.cfg.lipar.tau_short, self.cfg.lipar.tau_long, self.cfg.lipar.tau_output)

    def set_lipar(self, config: LiparConfig) -> None:
        self.lipar = self._resolve_lipar(config)
        self.mask = StreamingMask(self.lipar, self.grid, self.device)  # starts by keeping everything
        self.motion = MotionCompensator(self.lipar, (self.latent_h, self.latent_w))
        self.recovery = make_recovery(self.lipar)

    def set_backend(self, backend: str) -> None:
        """How the DiT and the VAE run: "torch" eagerly, "cudagraph" replayed from CUDA graphs (the DiT's
        blocks compiled), "auto" the graphs on a GPU. New runners: graphs are captured again as needed.
        A mask encoder set before keeps the backend it was set under."""
        if backend == "auto":
            backend = "cudagraph" if self.device.type == "cuda" else "torch"
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if backend == "cudagraph" and self.device.type != "cuda":
            raise ValueError("the cudagraph backend needs a CUDA device")
        self.backend = backend
        graphs = backend == "cudagraph"
        self.runner = CudaGraphRunner(self.dit, self.cache) if graphs else EagerRunner(self.dit, self.cache)
        # the VAE around the DiT: at 256x256 the tiny model's encode took 1.3 ms of launches (H200); TAEHV at
        # 480x832 encodes in 3.3 ms replayed against 4.1 eager, decodes in 4.3 against 6.3
        self._encode, self._decode = self._encode_pixels, self._decode_tokens
        if graphs:
            self._encode = GraphedCall(self._encode_pixels, lambda: self.vae.stream_memory("encoder"))
            self._decode = GraphedCall(self._decode_tokens, lambda: self.vae.stream_memory("decoder"))

    def set_side_stream(self, enabled: bool) -> None:
        """Whether the decode runs beside the cache pass and the mask encoder beside the model's encoder, on a
        second CUDA stream (the default); off, they run in order after them (`bench --side-stream off`)."""
        self._side = SideStream(self.device, enabled)

    def set_mask_encoder(self, name: str | None) -> None:
        """Drive LIPAR's mask from preset `name`'s shipped frame VAE (its latent of the latest source
        frame) instead of this model's source latent; None: this model's again. For timing a model with
        random weights at real scale, whose VAE hardly moves its latents (`bench --mask-encoder`); give
        that preset's thresholds in the LiparConfig. The extra encode is timed as the stage "mask_encoder"."""
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
        self.recovery = make_recovery(self.lipar)  # per-stream state (the noisy-copy mode's)
        # any callable shape -> standard normal noise; assign another after reset() to inject noise
        self.noise_source: NoiseSource = SeededNoise(self.seed, self.device)
        self.last_mode: str | None = None

    # ------------------------------------------------------------------ one block of latent frames
    @torch.inference_mode()
    def step(self, source: np.ndarray | Sequence[np.ndarray] | None = None) -> StepOutput:
        """One block: `frames_per_step` source frames (or one still frame, held) or None for text-to-video."""
        if self.prompt is None:
            raise RuntimeError("set_prompt() must be called before step()")
        mode = "t2v" if source is None else "v2v"
        if mode != self.last_mode:
            self.mask.reset()  # a mode switch is a scene cut for the mask: warm-up again
            self.motion.reset()
            self.recovery = make_recovery(self.lipar)
            self.last_mode = mode
        timer = StageTimer(self.device)
        started = time.perf_counter()
        t = self.cache.frames
        self.cache.append()
        context_frames = self.cache.context_frames
        if self.prompt.recache:
            with timer("recache"):
                recached = self._recache(self.prompt.kv)
            self.prompt.recache = False
        else:
            recached = 0

        source_tokens = frames_in = source_latents = mask_latents = None
        if source is not None:
            with timer("encode"):
                frames_in = self._source_tensor(source, self.frames_per_step)  # (1, F*T, H, W, 3) uint8
                mask_latents = self._mask_latents(frames_in, timer)  # beside the model's own encoder
                source_latents = self._encode_block(frames_in)  # (1, F, C, h, w)
                source_tokens = torch.cat([patchify(source_latents[:, i]) for i in range(self.block)], dim=1)
        compared = source_latents if mask_latents is None else mask_latents.result()  # (it times itself)
        with timer("mask"):
            masks = self._block_masks(frames_in, compared)
        decoded: list[Pending[Tensor]] = []
        with timer("dit"):
            keep_idx, pruned_idx = [m.keep_idx for m in masks], [m.pruned_idx for m in masks]
            clean = self.denoise(  # (1, F*N, D); the decode starts beside the cache pass
                t, source_tokens, keep_idx, pruned_idx, self._text_kv(),
                on_clean=lambda c: decoded.append(self._side.run(self._decode_block, c, timer)),
            )  # fmt: skip
        frames_clean = clean.split(self.tokens, dim=1)
        for mask, frame_clean in zip(masks, frames_clean):
            if mask.reason != "disabled":
                with timer("mask"):  # the settled-output rule measures this frame's output for the next mask
                    self.mask.observe_output(unpatchify(frame_clean, self.latent_h, self.latent_w)[0], mask.keep)
        frames_out = decoded[0].result().cpu().numpy()
        stages = timer.read_ms()  # on a GPU the decode's span overlaps the dit's (the cache pass)
        total = (time.perf_counter() - started) * 1000.0
        stats = {
            "frame": t,  # the block's first latent frame
            "latent_frames": self.block,
            "mode": mode,
            "kept_ratio": sum(m.kept_ratio for m in masks) / len(masks),
            "mask_reason": masks[-1].reason,
            "motion": self.motion.stats(),
            "kv_frames": context_frames,
            "recached_frames": recached,
            "stages_ms": stages,
            "total_ms": total,
            "ms_per_latent_frame": total / self.block,
        }
        latents = torch.stack([unpatchify(c, self.latent_h, self.latent_w) for c in frames_clean], dim=1)
        return StepOutput(list(frames_out), stats, masks[-1].keep.cpu().numpy(), latents.float())

    def encode_source(self, source: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        """uint8 (H, W, 3) frame(s) of one latent frame -> the source latent (1, C, h, w)."""
        return self._encode(self._source_tensor(source, self.frames_per_latent))

    def encode_block(self, source: np.ndarray | Sequence[np.ndarray]) -> Tensor:
        """uint8 (H, W, 3) frames of a block (or one still frame) -> its source latents (1, F, C, h, w)."""
        return self._encode_block(self._source_tensor(source, self.frames_per_step))

    def _encode_block(self, frames: Tensor) -> Tensor:
        """uint8 (1, F * frames_per_latent, H, W, 3) on the device -> latents (1, F, C, h, w), one VAE step each."""
        return torch.stack([self._encode(chunk) for chunk in self._latent_chunks(frames)], dim=1)

    def _latent_chunks(self, frames: Tensor) -> list[Tensor]:
        """(1, F * frames_per_latent, H, W, 3) -> the F chunks of frames_per_latent frames."""
        return list(frames.split(self.frames_per_latent, dim=1))

    def _encode_pixels(self, frames: Tensor, vae: torch.nn.Module | None = None) -> Tensor:
        """uint8 (1, T, H, W, 3) on the device -> latent (1, C, h, w) of `vae` (default: the model's)."""
        x = frames.permute(0, 1, 4, 2, 3).to(self.dtype) / 127.5 - 1.0
        return (self.vae if vae is None else vae).encode_step(x)

    def _decode_block(self, clean: Tensor, timer: StageTimer) -> Tensor:
        """A block's clean tokens (1, F*N, D) -> its uint8 frames (F*T, H, W, 3) on the device."""
        with timer("decode"):
            return torch.cat([self._decode(c) for c in clean.split(self.tokens, dim=1)])

    def _decode_tokens(self, clean: Tensor) -> Tensor:
        """Clean tokens (1, N, D) -> uint8 frames (T, H, W, 3) on the device."""
        with torch.autocast("cpu", torch.bfloat16, enabled=self.decode_dtype != self.dtype):
            video = self.vae.decode_step(unpatchify(clean, self.latent_h, self.latent_w).to(self.dtype))
        frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(0, 2, 3, 1)

    def _source_tensor(self, source: np.ndarray | Sequence[np.ndarray], count: int) -> Tensor:
        """`count` uint8 (H, W, 3) frames (or one, held) -> uint8 (1, count, H, W, 3) on the device, at the
        generator's size."""
        import cv2

        frames = [source] if isinstance(source, np.ndarray) else list(source)
        if len(frames) == 1 and count > 1:
            frames = frames * count  # a still source: hold the frame
        if len(frames) != count:
            raise ValueError(f"expected {count} source frame(s) per step, got {len(frames)}")
        out = []
        for f in frames:
            if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError("a source frame must be a uint8 numpy array of shape (H, W, 3)")
            if min(f.shape[:2]) < 8:
                raise ValueError(f"source frame {f.shape[1]}x{f.shape[0]} is too small")
            if f.shape[:2] != (self.height, self.width):
                f = cv2.resize(f, (self.width, self.height), interpolation=cv2.INTER_AREA)
            out.append(f)
        return self._upload(out)[None]

    def _mask(self, source_latent: Tensor | None) -> MaskResult:
        if not self.lipar.enabled:
            return MaskResult(self._keep_all, self.all_idx, self.all_idx[:0], 1.0, "disabled")
        # text-to-video (no source): the mask decides from the outputs alone, or keeps all (`t2v` off)
        result = self.mask.update(None if source_latent is None else source_latent[0].float(), self.motion.current)
        if self.previous_clean is None:  # nothing to restore from: compute everything
            return MaskResult(self._keep_all, self.all_idx, self.all_idx[:0], 1.0, result.reason)
        return result

    def _mask_latents(self, frames: Tensor, timer: StageTimer) -> Pending[Tensor] | None:
        """What the mask compares when another VAE drives it (`set_mask_encoder`): that VAE's latent of
        each latent frame's last source frame, (1, F, C, h, w), encoded beside the model's own encoder
        and timed as its own stage, "mask_encoder" (so "mask" is the mask's own work, and a reader sees what
        the stand-in costs). None where the mask compares the source latents. With LIPAR off no mask
        needs it, and set_lipar() starts a new mask, so none is owed a skipped frame."""
        if self._mask_encode is None or not self.lipar.enabled:
            return None

        def encode(frames: Tensor) -> Tensor:
            with timer("mask_encoder"):
                return torch.stack([self._mask_encode(chunk) for chunk in self._latent_chunks(frames)], dim=1)

        return self._side.run(encode, frames)

    def _block_masks(self, frames: Tensor | None, latents: Tensor | None) -> list[MaskResult]:
        """One mask per latent frame of the block, each against the frame before it (`frames` uint8
        (1, F*T, H, W, 3) and the latents the mask compares, (1, F, C, h, w), or None for text-to-video).
        Inside a block a token stays pruned only while it is pruned in every frame since the block began:
        then the last clean frame (before the block) is what it is restored and recovered from."""
        masks = []
        for i, chunk in enumerate(self._latent_chunks(frames) if frames is not None else [None] * self.block):
            self.motion.observe(None if chunk is None else chunk[0, -1])
            masks.append(self._mask(None if chunk is None else latents[:, i]))
        for i in range(1, len(masks)):
            keep = masks[i].keep | masks[i - 1].keep
            if not torch.equal(keep, masks[i].keep):
                flat = keep.flatten()
                kept = self.all_idx[flat]
                masks[i] = MaskResult(keep, kept, self.all_idx[~flat], kept.numel() / self.tokens, masks[i].reason)
        return masks

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

    def _recover(
        self, rope: tuple[Tensor, Tensor], pruned_idx: Tensor, source: tuple[Tensor, Tensor] | None, slot: int
    ) -> None:
        """Fill the pruned positions of a frame (in `slot`), all layers in one call: the clean K/V of the
        last clean frame, or `source` (k_pre, v), which the recovery mode chose. `rope` (cos, sin) of the
        pruned tokens at that frame's positions (`_pruned_rope`), made once per frame for every fill."""
        if not pruned_idx.numel():
            return
        cos, sin = rope
        dst_k, dst_v, dst_k_pre = self.cache.frame(slot)
        if source is None:
            _, src_v, src_k_pre = self.cache.frame(self.cache.previous_slot)
        else:
            src_k_pre, src_v = source
        src_k_pre, src_v = self.motion.kv(src_k_pre, src_v)  # from where the content was (still: as is)
        recover_kv(src_k_pre, src_v, dst_k, dst_v, dst_k_pre, pruned_idx, cos, sin)

    def _pruned_rope(self, t: int, pruned_idx: Tensor) -> tuple[Tensor, Tensor]:
        """RoPE (cos, sin) of frame t's pruned tokens, where recovered K is rotated."""
        return self.dit.rope.cos_sin(self.positions(t, pruned_idx))

    def denoise(
        self,
        t: int,
        source_tokens: Tensor | None,
        keep_idx: list[Tensor],
        pruned_idx: list[Tensor],
        text_kv: list,
        on_clean: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """Denoise the kept tokens of the block starting at frame t (its cache slots already opened) jointly,
        restore the pruned ones from the previous clean latent, run the cache pass over the block.
        `source_tokens` (1, F*N, C*4) or None (text-to-video); `keep_idx` / `pruned_idx` hold each frame's
        flat token indices. `on_clean` gets the clean tokens before the cache pass, for work that need not
        wait for it (the step's decode). Returns the block's clean tokens (1, F*N, C*4), frame-major."""
        schedule = self.cfg.t2v_schedule if source_tokens is None else self.cfg.v2v_schedule
        sigmas = schedule.sigmas
        n, slots = self.tokens, self.cache.current_slots
        noise = self.noise_source((1, self.block * n, self.cfg.patch_dim))
        x = noise if source_tokens is None else add_noise(source_tokens.float(), noise, sigmas[0])
        pruned = any(p.numel() for p in pruned_idx)
        block_keep = torch.cat([k + i * n for i, k in enumerate(keep_idx)])  # over the block's tokens
        x = x[:, block_keep] if pruned else x
        pos = torch.cat([self.positions(t + i, k) for i, k in enumerate(keep_idx)])
        recovery = self.recovery
        key_mask = None
        steps = list(zip(sigmas, next_sigmas(sigmas))) if block_keep.numel() else []  # all pruned: a still frame
        if pruned:  # every mode starts from the clean previous frame's K/V at the pruned positions, unless the
            # first step refills those same positions from the recovery mode's source anyway
            ropes = [self._pruned_rope(t + i, p) for i, p in enumerate(pruned_idx)]
            if not (steps and recovery.source(0) is not None):
                for i, p in enumerate(pruned_idx):
                    self._recover(ropes[i], p, None, slots[i])
            key_mask = self._key_mask(pruned_idx)
        refilled = False  # whether the pruned positions now hold something other than the clean copy
        write_idx = self.cache.block_token_index(block_keep)
        for i, (sigma, sigma_next) in enumerate(steps):
            source_kv = recovery.source(i) if pruned else None
            if source_kv is not None:  # a token pruned in the block is the previous block's last frame's
                for j, p in enumerate(pruned_idx):
                    self._recover(ropes[j], p, source_kv, slots[j])
                refilled = True
            timestep = self._timestep(sigma)
            v = self.runner(x.to(self.dtype), pos, timestep, text_kv, write_idx, recovery.stores_step_kv, key_mask)
            x = self.sampler.step(x, v.float(), sigma, sigma_next, self.noise_source)
            recovery.after_step(i, self._slot_snapshot)
        recovery.end_frame()
        if pruned:
            previous = self.motion.tokens(self.previous_clean)  # where its content is now (a still camera: as is)
            frames = x.split([k.numel() for k in keep_idx], dim=1)
            clean = torch.cat([restore(f, k, previous) for f, k in zip(frames, keep_idx)], dim=1)
        else:
            clean = x
        if on_clean is not None:
            on_clean(clean)
        if refilled:
            for j, p in enumerate(pruned_idx):
                self._recover(ropes[j], p, None, slots[j])
        self._cache_block(x, clean, source_tokens, block_keep, pos, text_kv, write_idx, key_mask)
        return clean

    def _cache_block(
        self,
        kept: Tensor,
        clean: Tensor,
        source_tokens: Tensor | None,
        block_keep: Tensor,
        pos: Tensor,
        text_kv: list,
        write_idx: Tensor,
        key_mask: Tensor | None,
    ) -> None:
        """The cache pass: the block's context, its clean tokens anchored to the source in video-to-video
        (engine/anchor.py), goes into the cache for later blocks, K/V (and K before RoPE) of its kept tokens
        at `write_idx` (the pruned ones' were recovered). `kept` are `clean`'s tokens at `block_keep`, as
        denoised, so that only anchoring gathers them again. The output, and what LIPAR restores from, stays
        the model's own."""
        context = clean
        if source_tokens is not None and self.cfg.v2v_anchor is not None:
            context = anchor_to_source(clean, source_tokens.float(), self.cfg.v2v_anchor)
            kept = context if kept.shape[1] == context.shape[1] else context[:, block_keep]
        if block_keep.numel():
            self.runner(kept.to(self.dtype), pos, self._timestep(0.0), text_kv, write_idx, True, key_mask)
        self.cache.commit(context)
        self.previous_clean = clean[:, -self.tokens :]

    def _key_mask(self, pruned_idx: list[Tensor]) -> Tensor | None:
        """The recovery mode's key mask over the valid keys, for every frame of the block at once."""
        combined = None
        for slot, pruned in zip(self.cache.current_slots, pruned_idx):
            mask = self.recovery.key_mask(self.cache.valid_tokens, slot * self.tokens, pruned)
            if mask is not None:
                combined = mask if combined is None else combined & mask
        return combined

    def _recache(self, text_kv: list) -> int:
        """Recompute the cached frames' K/V under `text_kv`: each cached block, oldest first, runs the cache
        pass again over its clean tokens, seeing the frames up to its own (as when it was made, less
        what the window has since evicted). Returns the number of frames recomputed."""
        recomputed = 0
        for slots in self.cache.cached_blocks():
            idx = torch.arange(len(slots) * self.tokens, device=self.device)
            cache_idx = self.cache.block_token_index(idx, slots)
            times = [self.cache.slot_time[s] for s in slots]
            pos = torch.cat([self.positions(time, self.all_idx) for time in times])
            x = self.cache.clean[:, cache_idx]
            key_mask = self.cache.keys_up_to(times[-1])
            self.runner(x.to(self.dtype), pos, self._timestep(0.0), text_kv, cache_idx, True, key_mask)
            recomputed += len(slots)
        return recomputed

    def _timestep(self, sigma: float) -> Tensor:
        if sigma not in self._timesteps:
            self._timesteps[sigma] = torch.full((1, 1), sigma * 1000.0, device=self.device)
        return self._timesteps[sigma]

    def _slot_snapshot(self) -> tuple[Tensor, Tensor]:
        """(k_pre, v) of the block's last frame: what the next block's pruned tokens continue from."""
        _, v, k_pre = self.cache.frame(self.cache.current_slots[-1])
        return k_pre.clone(), v.clone()
