"""Model presets: small frozen dataclasses, one registry that also feeds the CLI's choices."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class KVWindow:
    """Self-attention context: `sinks` first frames kept forever, the last `m` clean frames, and the
    `block` latent frames being denoised together now (1 = frame-wise; 3 = Self-Forcing / CausVid).

    The unpruned baseline and LIPAR use the same window, so their comparison is fair
    (DESIGN.md §4.3, the paper's M-degree). Self-Forcing's `local_attn_size` L with `sink_size` S is
    `KVWindow(S, L - S - block, block)`; its global attention (-1) keeps 21 frames, block included.
    """

    sinks: int = 1
    m: int = 6
    block: int = 1

    def __post_init__(self) -> None:
        if self.sinks < 0:
            raise ValueError(f"KVWindow.sinks must be >= 0, got {self.sinks}")
        if self.m < 1:
            raise ValueError(f"KVWindow.m must be >= 1, got {self.m}")
        if self.block < 1:
            raise ValueError(f"KVWindow.block (frames per block) must be >= 1, got {self.block}")

    @property
    def slots(self) -> int:
        # sinks + the last m frames + the block being generated now
        return self.sinks + self.m + self.block


GLOBAL_FRAMES = 21  # Self-Forcing's global attention: a 32760-token cache, 21 latent frames at 480x832


def parse_window(text: str, block: int = 1) -> KVWindow:
    """`SINKS,M` (sinks + the last M clean frames) or `global[:N]` (the last N frames in all, the block
    included, no sinks; N defaults to 21) -> the window for blocks of `block` frames."""
    spec = text.strip().lower()
    if spec == "global" or spec.startswith("global:"):
        count = spec.partition(":")[2] if ":" in spec else str(GLOBAL_FRAMES)
        if not count.isdigit() or int(count) <= block:
            raise ValueError(
                f"--window {text!r}: global:N needs a whole number of frames N > the block's {block} frame(s)"
            )
        return KVWindow(sinks=0, m=int(count) - block, block=block)
    parts = spec.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--window takes SINKS,M (e.g. 1,6) or global[:N] (e.g. global:21), got {text!r}")
    sinks, m = (int(p) for p in parts)
    if m < 1:
        raise ValueError(f"--window {text!r}: M (clean frames after the sinks) must be >= 1")
    return KVWindow(sinks=sinks, m=m, block=block)


@dataclass(frozen=True)
class Schedule:
    """Few-step rectified-flow schedule: sigmas in (0, 1], warped by `shift` (Wan/SD3 shift)."""

    timesteps: tuple[float, ...]  # in [0, 1000], before the shift
    shift: float = 5.0

    def __post_init__(self) -> None:
        if not self.timesteps:
            raise ValueError("Schedule needs at least one timestep")
        if any(not 0 < t <= 1000 for t in self.timesteps):
            raise ValueError(f"Schedule timesteps must lie in (0, 1000], got {self.timesteps}")
        if list(self.timesteps) != sorted(self.timesteps, reverse=True):
            raise ValueError(f"Schedule timesteps must decrease, got {self.timesteps}")
        if self.shift <= 0:
            raise ValueError(f"Schedule.shift must be > 0, got {self.shift}")

    @property
    def sigmas(self) -> list[float]:
        out = []
        for t in self.timesteps:
            s = t / 1000.0
            out.append(self.shift * s / (1.0 + (self.shift - 1.0) * s))
        return out


@dataclass(frozen=True)
class LiparDefaults:
    """Calibrated LIPAR thresholds for one model's latent scale (paper: 0.15 / 0.3 on Wan latents)."""

    tau_short: float
    tau_long: float
    tau_output: float | None = None  # the settled-output rule's threshold; None: not calibrated, rule off


SAMPLERS = ("euler", "renoise")  # engine/sampler.py builds each


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dim: int
    layers: int
    heads: int
    ffn_dim: int
    latent_channels: int
    text_dim: int  # width of the text encoder's token states
    text_len: int  # text states are padded with zeros to this many tokens (as Wan does)
    text_encoder: str  # "minilm" | "umt5" | "random"
    vae: str  # "frame" (tiny, frame-wise) | "taehv" (Wan-shaped, 4 frames per latent)
    height: int  # default video size
    width: int
    patch: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0
    vae_scale: int = 8
    frames_per_latent: int = 1  # video frames per latent frame (4 for the Wan VAE / TAEHV)
    # FrameVAE channel widths at 1/2, 1/4, 1/8 size and ResBlocks at each (ignored by TAEHV)
    vae_widths: tuple[int, int, int] = (48, 128, 192)
    vae_blocks: tuple[int, int, int] = (1, 1, 1)
    window: KVWindow = field(default_factory=KVWindow)
    t2v_schedule: Schedule = field(default_factory=lambda: Schedule((1000.0, 750.0, 500.0, 250.0)))
    v2v_schedule: Schedule = field(default_factory=lambda: Schedule((750.0, 500.0, 250.0)))
    lipar: LiparDefaults = field(default_factory=lambda: LiparDefaults(0.15, 0.3))
    # "euler": deterministic flow steps (what `tiny` is trained for); "renoise": predict x0, add fresh noise
    # at the next timestep (Self-Forcing / CausVid's few-step distilled sampling)
    sampler: str = "euler"
    # video-to-video: the cache keeps the source's token wherever the output is within this mean |latent|
    # distance of it (engine/anchor.py); None keeps the model's own outputs (models not measured with it)
    v2v_anchor: float | None = None

    def __post_init__(self) -> None:
        if self.v2v_anchor is not None and not self.v2v_anchor > 0:
            raise ValueError(f"{self.name}: v2v_anchor is a latent distance > 0 (or None: off), got {self.v2v_anchor}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if self.dim % self.heads:
            raise ValueError(f"{self.name}: dim {self.dim} is not divisible by heads {self.heads}")
        if self.head_dim % 2:
            raise ValueError(f"{self.name}: head dim {self.head_dim} must be even for RoPE")
        if self.patch[0] != 1:
            raise ValueError(f"{self.name}: only temporal patch 1 is supported (causal, frame by frame)")

    @property
    def frames_per_block(self) -> int:
        """Latent frames denoised jointly per step (block-causal attention), held by the window."""
        return self.window.block

    @property
    def frames_per_step(self) -> int:
        """Video frames in (and out) per generator step: a block of latent frames."""
        return self.frames_per_block * self.frames_per_latent

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch[0] * self.patch[1] * self.patch[2]

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) for a video size; raises ValueError for sizes the model cannot take."""
        step = self.vae_scale * self.patch[1]
        if height <= 0 or width <= 0 or height % step or width % step:
            raise ValueError(
                f"size {height}x{width} is not supported by {self.name}: "
                f"height and width must be positive multiples of {step}"
            )
        return height // self.vae_scale, width // self.vae_scale

    def tokens_per_frame(self, height: int, width: int) -> int:
        h, w = self.latent_size(height, width)
        return (h // self.patch[1]) * (w // self.patch[2])


CONFIGS: dict[str, ModelConfig] = {
    # Trained by this project (train/); runs on a CPU at 128x128 (64 tokens per frame). Sized so that
    # it also trains on 2 CPU cores when no GPU time is left (2.6 M parameters).
    "tiny": ModelConfig(
        name="tiny",
        dim=192,
        layers=4,
        heads=3,
        ffn_dim=768,
        latent_channels=16,
        text_dim=384,  # all-MiniLM-L6-v2 token states
        text_len=24,
        text_encoder="minilm",
        vae="frame",
        height=128,
        width=128,
        # 8 text-to-video steps, not 4: this undistilled model follows colour prompts in 84% of frames
        # with 8 and 52% with 4 (train/evaluate.py, 16 frames x 8 colours, CPU); 7 gave 81%
        t2v_schedule=Schedule((1000.0, 875.0, 750.0, 625.0, 500.0, 375.0, 250.0, 125.0), shift=3.0),
        # video-to-video from sigma 0.6, chosen by measurement (train.evaluate --v2v-only, CPU, round-6
        # weights): starts at sigma 0.5 / 0.6 / 0.67 gave fidelity 22.9 / 21.7 / 20.6 dB and colour
        # following 63 / 90 / 79 % (plain background), 20 / 98 / 86 % (brick wall)
        v2v_schedule=Schedule((333.0, 200.0, 100.0), shift=3.0),
        # Calibrated on the shipped VAE's latents (benchmarks/calibrate_lipar.py, static-camera
        # held-out clips): 97% of background tokens change by < 0.005 between frames, half of the
        # moving-object area by > 0.007. 0.008 pruned 99.9% of background but cost 3.5 dB on the
        # static clip of benchmarks/lipar_quality.py (25.3 vs 28.8 dB at kept 0.58 vs 0.71).
        lipar=LiparDefaults(tau_short=0.005, tau_long=0.010, tau_output=0.03),
        # the largest tolerance that keeps restyling >= 80 % of frames over all seven backgrounds measured
        # (benchmarks/results/tiny_v2v_anchor.json, LIPAR on): off / 0.4 / 0.5 gave fidelity 21.9 / 25.4 /
        # 25.7 dB (other held-out clips 20.3 / 24.0 / 24.5) and restyling at worst 89 / 81 / 78 %
        v2v_anchor=0.4,
    ),
    # Wan2.1-T2V-1.3B as used causally by Self-Forcing / CausVid (shared/wan2.1-1.3b.md).
    "wan2.1-1.3b": ModelConfig(
        name="wan2.1-1.3b",
        dim=1536,
        layers=30,
        heads=12,
        ffn_dim=8960,
        latent_channels=16,
        text_dim=4096,
        text_len=512,
        text_encoder="umt5",
        vae="taehv",
        height=480,
        width=832,
        frames_per_latent=4,
        # Self-Forcing: 1000, 750, 500, 250 warped by shift 5; video-to-video starts lower (SDEdit)
        t2v_schedule=Schedule((1000.0, 750.0, 500.0, 250.0), shift=5.0),
        v2v_schedule=Schedule((750.0, 500.0, 250.0), shift=5.0),
        lipar=LiparDefaults(tau_short=0.15, tau_long=0.3),
    ),
}
# Self-Forcing's released models as they were trained (configs/self_forcing_dmd.yaml): 3 latent frames per
# block, global attention over 21 frames, x0 prediction re-noised with fresh noise. CausVid runs the same way.
CONFIGS["self-forcing"] = replace(
    CONFIGS["wan2.1-1.3b"],
    name="self-forcing",
    window=KVWindow(sinks=0, m=GLOBAL_FRAMES - 3, block=3),
    sampler="renoise",
)


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(CONFIGS)}") from None
