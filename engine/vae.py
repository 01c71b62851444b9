"""Video autoencoders behind one streaming interface: the tiny frame-wise VAE and the TAEHV shape.

Both map video frames in [-1, 1] to normalised latents and back, one latent frame per call:

    latent = vae.encode_step(frames)   # (B, frames_per_latent, 3, H, W) -> (B, C, H/8, W/8)
    frames = vae.decode_step(latent)   # (B, C, h, w) -> (B, frames_per_latent, 3, 8h, 8w)
    vae.reset()                        # new stream: forget the temporal memory

Latents are normalised per channel, `latent = (raw - shift) * scale`, so the diffusion model sees
roughly unit-variance inputs; `set_latent_stats` stores the statistics once the VAE is trained.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig

log = logging.getLogger(__name__)


def _clamp_pixels(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] in the forward pass only.

    The dataset has many pixels at exactly -1 or 1 (flat colours); a plain clamp would give zero
    gradient to an output stuck on the wrong side, a tanh would never reach them. Straight-through
    keeps the gradient of the unclamped output.
    """
    return x + (x.clamp(-1.0, 1.0) - x).detach()


class StreamingAutoencoder(nn.Module):
    """What the generator relies on: the streaming steps, latent normalisation and the shapes."""

    spatial_factor = 8
    frames_per_latent: int
    # whether `decode_step` keeps its quality under bfloat16 autocast, so that a CPU that computes bfloat16
    # natively (`native_cpu_bfloat16`) decodes in it (StreamingGenerator.decode_dtype)
    cpu_bfloat16_decode = False
    shift: Tensor  # (C,) buffers, set by set_latent_stats
    scale: Tensor

    def __init__(self, latent_channels: int) -> None:
        super().__init__()
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}")
        self.latent_channels = latent_channels
        self.register_buffer("shift", torch.zeros(latent_channels))
        self.register_buffer("scale", torch.ones(latent_channels))

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store per-channel statistics of the raw (unnormalised) latents, each shaped (C,)."""
        mean = torch.as_tensor(mean).detach().float().flatten()
        std = torch.as_tensor(std).detach().float().flatten()
        for name, t in (("mean", mean), ("std", std)):
            if t.numel() != self.latent_channels:
                raise ValueError(f"latent {name} needs {self.latent_channels} values, got {t.numel()}")
            if not torch.isfinite(t).all():
                raise ValueError(f"latent {name} must be finite, got {t.tolist()}")
        if (std <= 0).any():
            raise ValueError(f"latent std must be > 0 in every channel, got {std.tolist()}")
        self.shift.copy_(mean)
        self.scale.copy_(1.0 / std)

    def normalise(self, raw: Tensor) -> Tensor:
        return (raw - self.shift.view(1, -1, 1, 1)) * self.scale.view(1, -1, 1, 1)  # (B, C, h, w)

    def denormalise(self, latent: Tensor) -> Tensor:
        return latent / self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)  # (B, C, h, w)

    def reset(self) -> None:
        """Forget the temporal memory before a new stream (nothing to forget by default)."""

    def stream_memory(self, part: str) -> list[Tensor] | None:
        """The tensors one `encode_step` (part "encoder") or `decode_step` ("decoder") reads and then
        rewrites in place for the next step; None where a step keeps nothing. A CUDA graph of a step
        replays against exactly these buffers (engine.backends.GraphedCall); empty before the stream's
        first step allocates them."""
        return None

    def encode_step(self, frames: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_step(self, latent: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_frames(self, frames: Tensor, ndim: int, time_multiple: int = 1) -> None:
        """frames (B, 3, H, W) if ndim is 4, else (B, T, 3, H, W) with T a multiple of `time_multiple`."""
        layout = "(B, 3, H, W)" if ndim == 4 else "(B, T, 3, H, W)"
        bad_time = ndim == 5 and frames.ndim == 5 and (frames.shape[1] % time_multiple or not frames.shape[1])
        if frames.ndim != ndim or frames.shape[-3] != 3 or bad_time:
            rule = f" with T a multiple of {time_multiple}" if time_multiple > 1 else ""
            name = type(self).__name__
            raise ValueError(f"{name} expects frames shaped {layout}{rule}, got {tuple(frames.shape)}")
        if frames.shape[-2] % self.spatial_factor or frames.shape[-1] % self.spatial_factor:
            raise ValueError(
                f"{type(self).__name__} needs height and width divisible by {self.spatial_factor}, "
                f"got {frames.shape[-2]}x{frames.shape[-1]}"
            )

    def _check_latents(self, latents: Tensor, ndim: int) -> None:
        """latents (B, C, h, w) if ndim is 4, else (B, T, C, h, w); C = latent_channels."""
        if latents.ndim != ndim or latents.shape[-3] != self.latent_channels:
            layout = "(B, C, h, w)" if ndim == 4 else "(B, T, C, h, w)"
            raise ValueError(
                f"{type(self).__name__} expects latents shaped {layout} with C={self.latent_channels}, "
                f"got {tuple(latents.shape)}"
            )

    def _check_step_frames(self, frames: Tensor) -> None:
        self._check_frames(frames, 5)
        if frames.shape[1] != self.frames_per_latent:
            raise ValueError(
                f"{type(self).__name__}.encode_step takes {self.frames_per_latent} frame(s) per call, "
                f"got {frames.shape[1]}"
            )


# ---------------------------------------------------------------- FrameVAE (the tiny model's VAE)


def _group_norm(width: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, width), width)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = _group_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        # Each block starts as the identity, so a deep stack trains from scratch without a warm-up.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))  # (B, width, H, W)


def _upsample(c_in: int, c_out: int) -> nn.Sequential:
    # 1x1 conv + pixel shuffle (a 2x2 stride-2 transposed conv): a nearest-upsample + 3x3 conv at the
    # doubled size would cost 9x the multiply-adds, and the ResBlocks after it mix space anyway.
    return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 1), nn.PixelShuffle(2))


class FrameVAE(StreamingAutoencoder):
    """Deterministic frame-wise conv autoencoder, 8x spatial, 3 stride-2 stages.

    `widths` are the channel counts at 1/2, 1/4 and 1/8 of the frame size, `blocks` the ResBlocks
    at each (the same in encoder and decoder). Capacity sits at low resolution so the decoder stays
    ~10 ms per 128x128 frame on 2 CPU cores (~0.64 GMAC). Short training probes on train.dataset
    clips (same recipe and time) found width at 1/2 and 1/4 size buys more PSNR on stripes and
    checkerboards than depth at 1/8: widths (48, 128, 192) with blocks (1, 1, 1) beat (32, 96, 192)
    with (1, 1, 2) by ~2.5 dB at the same decode cost. Runs in channels-last (NHWC), which oneDNN and cuDNN
    convolve faster.
    """

    frames_per_latent = 1
    # the shipped tiny model's 128x128 stream on the project's 2-core AMX VM (session 21, ad hoc): the decode
    # 7.5 -> 3.3 ms, the unpruned stream 28.0 -> 31.9 fps, its frames 57.7 dB (PSNR) from float32's. The
    # encoder stays float32: its rounding moves the latents LIPAR's thresholds were calibrated on (in bfloat16,
    # ad hoc, LIPAR kept 0.80 of benchmarks/data/vtest_path.mp4 instead of 0.75).
    cpu_bfloat16_decode = True

    def __init__(
        self,
        latent_channels: int = 16,
        widths: tuple[int, int, int] = (48, 128, 192),  # the shipped engine/weights/tiny/vae.safetensors
        blocks: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__(latent_channels)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"FrameVAE widths must be 3 positive channel counts, got {widths}")
        if len(blocks) != 3 or min(blocks) < 0:
            raise ValueError(f"FrameVAE blocks must be 3 non-negative counts, got {blocks}")
        w0, w1, w2 = widths
        n0, n1, n2 = blocks
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w0, 3, stride=2, padding=1),
            *[ResBlock(w0) for _ in range(n0)],
            nn.Conv2d(w0, w1, 3, stride=2, padding=1),
            *[ResBlock(w1) for _ in range(n1)],
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),
            *[ResBlock(w2) for _ in range(n2)],
            _group_norm(w2),
            nn.SiLU(),
            nn.Conv2d(w2, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w2, 3, padding=1),
            *[ResBlock(w2) for _ in range(n2)],
            _upsample(w2, w1),
            *[ResBlock(w1) for _ in range(n1)],
            _upsample(w1, w0),
            *[ResBlock(w0) for _ in range(n0)],
            _group_norm(w0),
            nn.SiLU(),
            nn.Conv2d(w0, 3 * 4, 3, padding=1),  # a 3x3 neighbourhood per output 2x2 pixel block
            nn.PixelShuffle(2),
        )
        self.to(memory_format=torch.channels_last)

    def encode(self, frames: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/8, W/8)."""
        self._check_frames(frames, 4)
        raw = self.encoder(frames.contiguous(memory_format=torch.channels_last))
        return self.normalise(raw).contiguous()

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, C, h, w) -> frames (B, 3, 8h, 8w) in [-1, 1]."""
        self._check_latents(latents, 4)
        raw = self.denormalise(latents).contiguous(memory_format=torch.channels_last)
        return _clamp_pixels(self.decoder(raw)).contiguous()

    def encode_step(self, frames: Tensor) -> Tensor:
        self._check_step_frames(frames)
        return self.encode(frames[:, 0])  # (B, C, h, w)

    def decode_step(self, latent: Tensor) -> Tensor:
        return self.decode(latent).unsqueeze(1)  # (B, 1, 3, H, W)


# ---------------------------------------------------------------- TAEHV (Wan-scale)
# Layer order and names follow the public TAEHV (madebyollin/taehv, taehv.py: encoder time downscale
# (True, True, False), decoder time upscale (False, True, True), space upscale on), so its taew2_1.pth
# loads key for key (`load_vae_weights`; our shift/scale buffers stay the identity: TAEW2.1 decodes
# the DiT's latents as they are, as Self-Forcing's demo feeds them). It works in [0, 1] pixels.


def _conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the incoming latent to (-3, 3)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual conv stack over concat(current features, the previous time step's input features)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(c_in * 2, c_out), nn.ReLU(), _conv3x3(c_out, c_out), nn.ReLU(), _conv3x3(c_out, c_out)
        )
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Tensor, past: Tensor) -> Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))  # (N, c_out, H, W)


class TPool(nn.Module):
    """Time pool: `stride` consecutive frames stacked on channels, mixed by a 1x1 conv."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C, H, W = x.shape
        x = self.conv(_frames_to_channels(x, self.stride))
        return x.view(B, T // self.stride, C, H, W)


class TGrow(nn.Module):
    """Time grow: a 1x1 conv makes `stride` frames out of each frame's channels."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        x = self.conv(x.flatten(0, 1))  # (B*T, stride*C, H, W), frame t's outputs in time order
        return _channels_to_frames(x, self.stride, B)


# TAEHV runs channels last (NHWC in memory): cuDNN's convolutions work in that layout, so NCHW tensors cost a
# layout conversion at every convolution's input and output (on an H200, ~190 conversion kernels and ~2.6 ms per
# latent frame at 480x832 in session 19's profile, none in session 20's). A 5-D (B, T, C, H, W) tensor here has
# channels innermost too, so flattening (B, T) into a batch of frames is a view; only the time pool and grow,
# which move frames between the time and channel axes, copy (and at stride 1 not even they).


def _frames_to_channels(x: Tensor, s: int) -> Tensor:
    """(B, T, C, H, W) -> (B*T/s, s*C, H, W): each s consecutive frames stacked on channels (frame-major),
    channels last in memory."""
    B, T, C, H, W = x.shape
    frames = x.permute(0, 1, 3, 4, 2).reshape(B * T // s, s, H, W, C).permute(0, 2, 3, 1, 4)  # (n, H, W, s, C)
    return frames.reshape(B * T // s, H, W, s * C).permute(0, 3, 1, 2)


def _channels_to_frames(x: Tensor, s: int, batch: int) -> Tensor:
    """(B*T, s*C, H, W) -> (B, T*s, C, H, W): each frame's channels split into s frames in time order,
    channels last in memory."""
    n, channels, H, W = x.shape
    C = channels // s
    frames = x.permute(0, 2, 3, 1).reshape(n, H, W, s, C).permute(0, 3, 1, 2, 4).contiguous()  # (n, s, H, W, C)
    return frames.reshape(batch, n * s // batch, H, W, C).permute(0, 1, 4, 2, 3)


class TAEHV(StreamingAutoencoder):
    """The TAEHV shape: 8x space, 4x time (two x2 TPool / TGrow stages), causal MemBlocks.

    Streaming memory is each MemBlock's input at the previous video (encoder) or latent-derived
    (decoder) time step. `encode_video` / `decode_video` run several steps at once and continue the
    same stream, so chunking never changes the result. The first latent decodes to 4 frames, unless
    `drop_startup_frames`: TAEHV's released weights are aligned with the Wan VAE (1 + 4k frames), so
    taehv.py and Self-Forcing's demo drop a stream's first 3 decoded frames; `load_vae_weights` sets it.
    """

    frames_per_latent = 4

    def __init__(self, latent_channels: int = 16, drop_startup_frames: bool = False) -> None:
        super().__init__(latent_channels)
        self.drop_startup_frames = drop_startup_frames
        self._latents_decoded = 0
        c = 64
        self.encoder = nn.Sequential(
            _conv3x3(3, c), nn.ReLU(),
            TPool(c, 2), _conv3x3(c, c, stride=2, bias=False), MemBlock(c, c), MemBlock(c, c), MemBlock(c, c),
            TPool(c, 2), _conv3x3(c, c, stride=2, bias=False), MemBlock(c, c), MemBlock(c, c), MemBlock(c, c),
            TPool(c, 1), _conv3x3(c, c, stride=2, bias=False), MemBlock(c, c), MemBlock(c, c), MemBlock(c, c),
            _conv3x3(c, latent_channels),
        )  # fmt: skip
        n_f = (256, 128, 64, 64)
        self.decoder = nn.Sequential(
            Clamp(), _conv3x3(latent_channels, n_f[0]), nn.ReLU(),
            MemBlock(n_f[0], n_f[0]), MemBlock(n_f[0], n_f[0]), MemBlock(n_f[0], n_f[0]),
            nn.Upsample(scale_factor=2), TGrow(n_f[0], 1), _conv3x3(n_f[0], n_f[1], bias=False),
            MemBlock(n_f[1], n_f[1]), MemBlock(n_f[1], n_f[1]), MemBlock(n_f[1], n_f[1]),
            nn.Upsample(scale_factor=2), TGrow(n_f[1], 2), _conv3x3(n_f[1], n_f[2], bias=False),
            MemBlock(n_f[2], n_f[2]), MemBlock(n_f[2], n_f[2]), MemBlock(n_f[2], n_f[2]),
            nn.Upsample(scale_factor=2), TGrow(n_f[2], 2), _conv3x3(n_f[2], n_f[3], bias=False),
            nn.ReLU(), _conv3x3(n_f[3], 3),
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)  # see _frames_to_channels
        self._encoder_memory: dict[int, Tensor] = {}
        self._decoder_memory: dict[int, Tensor] = {}

    def stream_memory(self, part: str) -> list[Tensor]:
        return list((self._encoder_memory if part == "encoder" else self._decoder_memory).values())

    def reset(self) -> None:
        self._encoder_memory.clear()
        self._decoder_memory.clear()
        self._latents_decoded = 0

    def encode_video(self, frames: Tensor) -> Tensor:
        """Continue the stream with (B, 4T, 3, H, W) frames in [-1, 1] -> latents (B, T, C, H/8, W/8)."""
        self._check_frames(frames, 5, self.frames_per_latent)
        raw = _run_causal(self.encoder, _channels_last((frames + 1) / 2), self._encoder_memory)  # (B, T, C, h, w)
        return self.normalise(raw).contiguous()

    def decode_video(self, latents: Tensor) -> Tensor:
        """Continue the stream with latents (B, T, C, h, w) -> frames (B, 4T, 3, 8h, 8w) in [-1, 1]."""
        self._check_latents(latents, 5)
        raw = _channels_last(self.denormalise(latents))
        pixels = _run_causal(self.decoder, raw, self._decoder_memory)  # (B, 4T, 3, H, W) in ~[0, 1], channels last
        if self.drop_startup_frames and self._latents_decoded == 0:
            pixels = pixels[:, self.frames_per_latent - 1 :]  # the stream starts with 1 frame, as Wan's does
        self._latents_decoded += latents.shape[1]
        return _clamp_pixels(pixels * 2 - 1)

    def encode_step(self, frames: Tensor) -> Tensor:
        self._check_step_frames(frames)
        return self.encode_video(frames)[:, 0]  # (B, C, h, w)

    def decode_step(self, latent: Tensor) -> Tensor:
        self._check_latents(latent, 4)
        return self.decode_video(latent.unsqueeze(1))  # (B, 4, 3, H, W)


def _run_causal(stack: nn.Sequential, x: Tensor, memory: dict[int, Tensor]) -> Tensor:
    """Run `stack` over a chunk of time steps x (B, T, C, H, W), all steps of a layer at once.

    Each MemBlock sees, for step t, its own input at step t-1: inside the chunk by shifting, across
    chunks from `memory` (zeros at the start of a stream). The stream's first chunk allocates each
    layer's buffer; later chunks overwrite it in place, so that a CUDA graph of a step keeps reading and
    writing the same memory (TAEHV.stream_memory).
    """
    for i, layer in enumerate(stack):
        B, T = x.shape[:2]
        if isinstance(layer, MemBlock):
            prev = memory.get(i)
            if prev is None:
                prev = torch.zeros_like(x[:, :1])
            elif prev.shape != x[:, :1].shape:
                raise ValueError(
                    f"stream memory holds shape {tuple(prev.shape)} but the new input has "
                    f"{tuple(x[:, :1].shape)}; call reset() when the batch or frame size changes"
                )
            past = torch.empty_like(x)  # (B, T, C, H, W) in x's layout (a cat would make it time-major)
            past[:, :1], past[:, 1:] = prev, x[:, :-1]  # read before prev is overwritten
            if i in memory:
                memory[i].copy_(x[:, -1:])
            else:
                memory[i] = x[:, -1:].clone()  # a copy, so the whole chunk is not kept alive
            x = layer(x.flatten(0, 1), past.flatten(0, 1)).unflatten(0, (B, T))
        elif isinstance(layer, (TPool, TGrow)):
            x = layer(x)
        else:
            x = layer(x.flatten(0, 1)).unflatten(0, (B, T))
    return x


def _channels_last(x: Tensor) -> Tensor:
    """A (B, T, C, H, W) tensor with channels innermost in memory (a view where it already is)."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def load_vae_weights(vae: StreamingAutoencoder, path: str | Path) -> None:
    """Our own VAE files (vae.safetensors, with latent statistics) or a TAEHV release (taew2_1.pth,
    safetensors/taew2_1.safetensors), key for key with clear errors (engine.checkpoint)."""
    from engine.checkpoint import load_state_dict_checked, read_state

    state = read_state(path)
    release = isinstance(vae, TAEHV) and "shift" not in state and "scale" not in state
    if release:  # TAEHV's files hold no latent statistics: it decodes the DiT's latents as they are
        state = {**state, "shift": torch.zeros_like(vae.shift), "scale": torch.ones_like(vae.scale)}
    load_state_dict_checked(vae, state, path)
    if release:
        vae.drop_startup_frames = True
        log.info(
            "%s: a TAEHV release; the stream's first %d decoded frames are dropped", path, vae.frames_per_latent - 1
        )


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16); elsewhere oneDNN emulates it,
    slower than float32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def build_vae(config: ModelConfig) -> FrameVAE | TAEHV:
    """The (untrained) autoencoder `config.vae` names, checked against the config's latent geometry."""
    if config.vae == "frame":
        vae = FrameVAE(config.latent_channels, config.vae_widths, config.vae_blocks)
    elif config.vae == "taehv":
        vae = TAEHV(latent_channels=config.latent_channels)
    else:
        raise ValueError(f"{config.name}: unknown vae {config.vae!r}; choose one of: frame, taehv")
    if vae.frames_per_latent != config.frames_per_latent or vae.spatial_factor != config.vae_scale:
        raise ValueError(
            f"{config.name}: vae {config.vae!r} makes one latent per {vae.frames_per_latent} frame(s) at "
            f"1/{vae.spatial_factor} size, but the config says frames_per_latent="
            f"{config.frames_per_latent}, vae_scale={config.vae_scale}"
        )
    return vae
