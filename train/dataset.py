"""Procedural captioned video clips, rendered in batches with torch (GPU for training, CPU for tests).

A clip is fully described by a frozen `ClipParams` drawn from a seed. `render` turns a list of them
into uint8 video at any size (positions and sizes are fractions of the frame, so the same clip
renders at 128 and at 256), and `caption` describes exactly what is drawn. Most clips keep a static
camera, because LIPAR prunes what does not change; some pan the camera or cut to a new scene so the
model also learns those.

    python -m train.dataset --seed 0 --out clip.mp4 --size 128 --frames 24
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "orange": (250, 135, 20),
    "purple": (130, 40, 190),
    "pink": (250, 130, 190),
    "cyan": (30, 210, 225),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

SHAPES = ("ball", "square", "triangle", "diamond", "ring", "cross")
SIZES: dict[str, float] = {"small": 0.06, "medium": 0.10, "large": 0.15}  # radius, frame fractions
# frame fractions per frame. At 0.006 / 0.013 (sessions 1-9) an object crossed under one 16-px token in the
# 6-frame context window and the trained model drew it still; now even "slow" crosses most of a token there
SPEEDS: dict[str, float] = {"still": 0.0, "slow": 0.01, "medium": 0.018, "fast": 0.03}
# Share of moving objects placed so that their whole path over the clip stays in frame: no bounce inside
# the clip, so "moving right" holds in every frame (with starts drawn anywhere, 8% of the clips
# captioned with a direction ended where they began or behind it, measured by train.evaluate)
IN_FRAME_SHARE = 0.85
_DIAG = math.sqrt(0.5)
DIRECTIONS: dict[str, tuple[float, float]] = {  # (x, y) unit vectors, y grows downwards
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_DIAG, -_DIAG),
    "up-right": (_DIAG, -_DIAG),
    "down-left": (-_DIAG, _DIAG),
    "down-right": (_DIAG, _DIAG),
}
PATTERNS = ("flat", "gradient", "stripes", "checkerboard", "noise")
CAMERA_SPEED = 0.01  # frame fractions per frame: a slow pan
HELDOUT_SEEDS_START = 1_000_000_000  # training draws seeds below this; evaluations draw from here on


@dataclass(frozen=True)
class Photo:
    loader: str  # skimage.data function; all of these ship inside the scikit-image wheel
    phrases: tuple[str, ...]
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colours grey photos so captions stay true


PHOTOS: dict[str, Photo] = {
    "brick": Photo("brick", ("a brick wall", "an old brick wall"), (0.95, 0.55, 0.42)),
    "grass": Photo("grass", ("grass", "a lawn"), (0.55, 0.9, 0.4)),
    "gravel": Photo("gravel", ("gravel", "a gravel path"), (0.9, 0.85, 0.75)),
    "coffee": Photo("coffee", ("a cup of coffee", "a coffee cup")),
    "rocket": Photo("rocket", ("a rocket on its launch pad", "a rocket")),
    "astronaut": Photo("astronaut", ("a portrait of an astronaut", "an astronaut")),
    "cat": Photo("chelsea", ("a tabby cat", "a cat")),
    "camera": Photo("camera", ("a black and white photo of a cameraman", "a photographer")),
    "space": Photo("hubble_deep_field", ("a starry sky", "distant galaxies")),
    "tissue": Photo("immunohistochemistry", ("stained cells under a microscope", "a microscope slide")),
    "coins": Photo("coins", ("a pile of old coins", "coins")),
    "moon": Photo("moon", ("the surface of the moon", "lunar craters")),
}
_PHOTO_NAMES = tuple(PHOTOS)
_PHOTO_RES = 512  # texture side; clips show 45-100% of it, so 256-px frames are never upsampled much


def _check(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


@dataclass(frozen=True)
class ObjectParams:
    shape: str
    color: str
    size: str
    direction: str
    speed: str
    start: tuple[float, float]  # centre (x, y) at the scene's first frame; outside [0, 1] = off-screen
    bounce: bool  # bounces off the frame edges; otherwise it may enter or leave the frame

    def __post_init__(self) -> None:
        _check(self.shape, SHAPES, "shape")
        _check(self.color, COLORS, "colour")
        _check(self.size, SIZES, "size")
        _check(self.direction, DIRECTIONS, "direction")
        _check(self.speed, SPEEDS, "speed")

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def entering_from(self) -> str | None:
        """The side the object enters from, if it starts off-screen."""
        x, y = self.start
        for side, out in (("left", x < 0), ("right", x > 1), ("top", y < 0), ("bottom", y > 1)):
            if out:
                return side
        return None

    def trajectory(self, frames: int) -> np.ndarray:
        """Centre per frame (T, 2), in the coordinates of the scene's first frame."""
        v = np.asarray(DIRECTIONS[self.direction]) * SPEEDS[self.speed]
        pos = np.asarray(self.start) + np.arange(frames)[:, None] * v  # (T, 2)
        if self.bounce:  # fold the straight path into [r, 1 - r]: a triangle wave is a bounce
            lo, span = self.radius, 1.0 - 2.0 * self.radius
            m = np.mod(pos - lo, 2.0 * span)
            pos = lo + span - np.abs(m - span)
        return pos

    def reverses(self, frames: int) -> bool:
        """True if it bounces off an edge within `frames`: its caption then names no direction."""
        if not self.bounce or self.speed == "still":
            return False
        v = np.asarray(DIRECTIONS[self.direction]) * SPEEDS[self.speed]
        straight = np.asarray(self.start) + np.arange(frames)[:, None] * v
        return not np.allclose(self.trajectory(frames), straight)


@dataclass(frozen=True)
class Background:
    kind: str  # one of PATTERNS or "photo"
    colors: tuple[str, str] = ("black", "white")  # pattern colours; flat uses the first only
    angle: float = 0.0  # radians: direction of the gradient / stripes / checkerboard
    period: float = 0.25  # stripes and checkerboard period, frame fractions
    photo: str | None = None
    view: tuple[float, float, float] = (0.0, 0.0, 1.0)  # photo or noise crop: x0, y0, scale (+/-: flip)
    pan: str | None = None  # slow background pan direction (the objects do not move with it)
    zoom: float = 0.0  # log zoom per frame; > 0 zooms in
    noise_seed: int = 0

    def __post_init__(self) -> None:
        _check(self.kind, (*PATTERNS, "photo"), "background")
        for c in self.colors:
            _check(c, COLORS, "colour")
        if self.kind == "photo":
            _check(self.photo, PHOTOS, "photo")
        if self.pan is not None:
            _check(self.pan, DIRECTIONS, "direction")
        if self.period <= 0:
            raise ValueError(f"Background.period must be > 0, got {self.period}")
        if self.view[2] == 0:
            raise ValueError("Background.view scale must be non-zero")


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[ObjectParams, ...]  # the first is the main object: mentioned first, drawn on top

    def __post_init__(self) -> None:
        if len(self.objects) > 3:
            raise ValueError(f"a scene holds at most 3 objects, got {len(self.objects)}")


@dataclass(frozen=True)
class ClipParams:
    seed: int
    frames: int
    scenes: tuple[Scene, ...]  # one, or two with a cut
    cut: int | None = None  # first frame of scenes[1]
    camera: str | None = None  # direction of a camera pan (the whole scene shifts); None = static

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"a clip needs at least 1 frame, got {self.frames}")
        if len(self.scenes) not in (1, 2):
            raise ValueError(f"a clip has 1 or 2 scenes, got {len(self.scenes)}")
        if (len(self.scenes) == 2) != (self.cut is not None):
            raise ValueError("a clip with two scenes needs a cut frame, and only such a clip")
        if self.cut is not None and not 0 < self.cut < self.frames:
            raise ValueError(f"cut frame {self.cut} must lie inside the clip (1..{self.frames - 1})")
        if self.camera is not None:
            _check(self.camera, DIRECTIONS, "direction")

    @property
    def main(self) -> ObjectParams:
        return self.scenes[0].objects[0]

    @property
    def static_camera(self) -> bool:
        """True when everything but the objects stays still: no camera pan, background drift or cut."""
        bg = self.scenes[0].background
        return self.camera is None and self.cut is None and bg.pan is None and bg.zoom == 0.0

    def scene_span(self, index: int) -> tuple[int, int]:
        """[start, end) frames shown by scenes[index]."""
        if index == 0:
            return 0, self.cut if self.cut is not None else self.frames
        return self.cut, self.frames


# ---------------------------------------------------------------------------------------- sampling


def sample_clip(seed: int, frames: int) -> ClipParams:
    """Draw every random choice of one clip from `seed` (the same on every machine)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    rng = random.Random(seed)  # plain Python: sampling ran 4x faster than with numpy, equally stable
    r = rng.random()
    # mostly static cameras: LIPAR needs static backgrounds, and the model must learn to keep them still
    motion = "static" if r < 0.62 else "drift" if r < 0.74 else "camera" if r < 0.87 else "cut"
    if motion == "cut" and frames < 4:
        motion = "static"
    scenes = [_sample_scene(rng, frames, drift=motion == "drift")]
    cut = camera = None
    if motion == "cut":
        scenes.append(_sample_scene(rng, frames, drift=False))
        cut = rng.randint(frames // 4, 3 * frames // 4)
        cut = min(max(cut, 1), frames - 1)
    elif motion == "camera":
        camera = rng.choice(list(DIRECTIONS))
    return ClipParams(seed=seed, frames=frames, scenes=tuple(scenes), cut=cut, camera=camera)


def _sample_scene(rng: random.Random, frames: int, drift: bool) -> Scene:
    count = rng.choices([1, 2, 3], weights=[0.5, 0.32, 0.18])[0]
    colors = rng.sample(list(COLORS), count)
    # groups ("two squares, a blue one and a yellow one, drifting up") need a shared shape and motion
    same_shape = count > 1 and rng.random() < 0.3
    same_motion = same_shape and rng.random() < 0.5
    shared = (rng.choice(SHAPES), rng.choice(list(DIRECTIONS)), _sample_speed(rng))
    objects = []
    for color in colors:
        shape = shared[0] if same_shape else rng.choice(SHAPES)
        direction, speed = shared[1:] if same_motion else (rng.choice(list(DIRECTIONS)), _sample_speed(rng))
        objects.append(_sample_object(rng, shape, color, direction, speed, frames))
    return Scene(_sample_background(rng, exclude=colors, drift=drift), tuple(objects))


def _sample_speed(rng: random.Random) -> str:
    return rng.choices(list(SPEEDS), weights=[0.12, 0.3, 0.35, 0.23])[0]


def _sample_object(rng: random.Random, shape: str, color: str, direction: str, speed: str, frames: int) -> ObjectParams:
    size = rng.choice(list(SIZES))
    r = SIZES[size]
    travel = np.asarray(DIRECTIONS[direction]) * SPEEDS[speed] * (frames - 1)  # (x, y) over the clip
    in_frame = rng.random() < IN_FRAME_SHARE
    start = []
    for axis in (0, 1):
        lo, hi = r, 1.0 - r
        if in_frame and hi - lo > abs(travel[axis]):  # start where the whole path fits
            lo, hi = lo - min(travel[axis], 0.0), hi - max(travel[axis], 0.0)
        start.append(rng.uniform(lo, hi))
    bounce = speed == "still" or rng.random() < 0.75
    if not bounce and rng.random() < 0.5:  # enter from the side it moves away from
        dx, dy = DIRECTIONS[direction]
        axis = 0 if abs(dx) >= abs(dy) else 1
        start[axis] = -1.05 * r if (dx, dy)[axis] > 0 else 1.0 + 1.05 * r
    return ObjectParams(shape, color, size, direction, speed, (start[0], start[1]), bounce)


def _sample_background(rng: random.Random, exclude: list[str], drift: bool) -> Background:
    kind = rng.choices([*PATTERNS, "photo"], weights=[0.08, 0.12, 0.12, 0.1, 0.16, 0.42])[0]
    # pattern colours differ from every object's, so objects stay visible and nameable
    c0, c1 = rng.sample([c for c in COLORS if c not in exclude], 2)
    scale = rng.uniform(0.45, 1.0)
    view = (rng.uniform(0.0, 1.0 - scale), rng.uniform(0.0, 1.0 - scale), scale * rng.choice([-1.0, 1.0]))
    pan, zoom = None, 0.0
    if drift and kind != "flat":
        if rng.random() < 0.5:
            pan = rng.choice(list(DIRECTIONS))
        else:
            zoom = rng.choice([-1.0, 1.0]) * rng.uniform(0.006, 0.015)
    return Background(
        kind=kind,
        colors=(c0, c1),
        angle=rng.choice([0.0, 0.25, 0.5, 0.75]) * math.pi if kind == "stripes" else rng.uniform(0, 2 * math.pi),
        # bands of >= 10 px at 128: finer ones measured 19-22 dB through the 8x VAE (aliasing in 8-px cells)
        period=rng.uniform(0.16, 0.4),
        photo=rng.choice(_PHOTO_NAMES) if kind == "photo" else None,
        view=view,
        pan=pan,
        zoom=zoom,
        noise_seed=rng.getrandbits(31),
    )


def recolor(params: ClipParams, seed: int) -> ClipParams:
    """The same clip with every object in another colour: the source half of a restyling pair.

    Video-to-video starts from the noised source, whose colours the caption may contradict; training
    on (recoloured source, original clip + its caption) pairs teaches the model to take layout and
    motion from the source and colour from the prompt. New colours stay apart from the background's
    and from each other's, as sampling keeps them.
    """
    rng = random.Random(seed)
    scenes = []
    for scene in params.scenes:
        taken = set(scene.background.colors) | {o.color for o in scene.objects}
        free = [c for c in COLORS if c not in taken]
        new = rng.sample(free, len(scene.objects))
        objects = tuple(dataclasses.replace(o, color=c) for o, c in zip(scene.objects, new, strict=True))
        scenes.append(dataclasses.replace(scene, objects=objects))
    return dataclasses.replace(params, scenes=tuple(scenes))


# ---------------------------------------------------------------------------------------- captions

_NUMBERS = {2: "two", 3: "three"}
_PLURALS = {"ball": "balls", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
            "ring": "rings", "cross": "crosses"}  # fmt: skip
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("",), "large": ("big", "large")}
_VERBS = {"ball": ("rolling", "bouncing", "moving", "drifting")}
_VERBS_DEFAULT = ("moving", "sliding", "drifting", "gliding")
_STILL = ("sitting still", "resting", "standing still", "not moving")
_BOUNCING = ("bouncing around", "bouncing off the edges")


def caption(params: ClipParams, seed: int | None = None) -> str:
    """A description of the clip; `seed` varies the wording (default: the clip's seed)."""
    rng = random.Random(params.seed if seed is None else seed)
    spans = [params.scene_span(i) for i in range(len(params.scenes))]
    text = _describe_scene(params.scenes[0], spans[0][1] - spans[0][0], rng)
    bg = params.scenes[0].background
    if params.camera is not None:
        text += rng.choice([", as the camera pans {}", ", the camera panning {}", " while the camera pans {}"])
        text = text.format(_direction_words(params.camera))
    elif bg.pan is not None:
        text += f", the background slowly panning {_direction_words(bg.pan)}"
    elif bg.zoom != 0.0:
        text += f", the background slowly zooming {'in' if bg.zoom > 0 else 'out'}"
    if params.cut is not None:
        text += rng.choice([", then the scene cuts to ", "; then a cut to ", ", then suddenly "])
        text += _describe_scene(params.scenes[1], spans[1][1] - spans[1][0], rng)
    return text


def _direction_words(direction: str) -> str:
    return direction.replace("-", " and ")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _describe_motion(obj: ObjectParams, frames: int, rng: random.Random) -> str:
    if obj.speed == "still":
        return rng.choice(_STILL)
    if obj.reverses(frames):
        return rng.choice(_BOUNCING)
    verb = rng.choice(_VERBS.get(obj.shape, _VERBS_DEFAULT))
    adverb = {"slow": "slowly", "medium": "", "fast": "quickly"}[obj.speed]
    side = obj.entering_from
    if side is not None and rng.random() < 0.6:
        phrase = f"{rng.choice(['entering', 'coming in'])} from the {side}"
    else:
        phrase = f"{verb} {_direction_words(obj.direction)}"
    if not adverb:
        return phrase
    return f"{adverb} {phrase}" if rng.random() < 0.5 else f"{phrase} {adverb}"


def _describe_objects(objects: tuple[ObjectParams, ...], frames: int, rng: random.Random) -> str:
    key = lambda o: (o.shape, o.direction, o.speed, o.entering_from, o.reverses(frames))  # noqa: E731
    grouped = len(objects) > 1 and all(key(o) == key(objects[0]) for o in objects)
    if grouped:
        colors = [_article(f"{o.color} one") for o in objects]
        listed = ", ".join(colors[:-1]) + " and " + colors[-1]
        motion = _describe_motion(objects[0], frames, rng)
        return f"{_NUMBERS[len(objects)]} {_PLURALS[objects[0].shape]}, {listed}, {motion}"
    parts = []
    for o in objects:
        size = rng.choice(_SIZE_WORDS[o.size])
        noun = " ".join(w for w in (size, o.color, o.shape) if w)
        parts.append(f"{_article(noun)} {_describe_motion(o, frames, rng)}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _describe_background(bg: Background, rng: random.Random) -> str:
    c0, c1 = bg.colors
    if bg.kind == "photo":
        return rng.choice(PHOTOS[bg.photo].phrases)
    if bg.kind == "flat":
        return f"a {rng.choice(['plain', 'flat', 'solid'])} {c0} background"
    if bg.kind == "gradient":
        return rng.choice([_article(f"{c0} to {c1} gradient"), f"a gradient from {c0} to {c1}"])
    if bg.kind == "stripes":
        steps = round(bg.angle / (math.pi / 4)) % 4
        orient = ("vertical", "diagonal", "horizontal", "diagonal")[steps]
        return rng.choice([f"{orient} {c0} and {c1} stripes", f"{c0} and {c1} {orient} stripes"])
    if bg.kind == "checkerboard":
        return rng.choice([_article(f"{c0} and {c1} checkerboard"), f"a checkered {c0} and {c1} floor"])
    return rng.choice([f"a mottled {c0} and {c1} texture", f"cloudy {c0} and {c1} blotches"])


def _describe_scene(scene: Scene, frames: int, rng: random.Random) -> str:
    objects = _describe_objects(scene.objects, frames, rng)
    bg = _describe_background(scene.background, rng)
    if rng.random() < 0.2:
        return f"{bg} behind {objects}"
    return f"{objects} {rng.choice(['over', 'in front of', 'against'])} {bg}"


# ---------------------------------------------------------------------------------------- rendering


def render(params_list: list[ClipParams], size: int, device: str | torch.device = "cpu") -> Tensor:
    """Render clips of equal length: uint8 (B, T, size, size, 3) on `device`.

    Work is batched over every clip that shares a background kind or an object shape, so the
    Python loops run over kinds and layers, never over frames or pixels.
    """
    if not params_list:
        raise ValueError("render needs at least one clip")
    frames = {p.frames for p in params_list}
    if len(frames) != 1:
        raise ValueError(f"clips rendered together need the same number of frames, got {sorted(frames)}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    device = torch.device(device)
    b, t = len(params_list), frames.pop()
    canvas = torch.zeros(b, t, size, size, 3, device=device)  # (B, T, H, W, 3) in [0, 1]
    for scene_index in (0, 1):
        active = _active_frames(params_list, scene_index)  # (B, T) bool, numpy
        clips = [i for i in range(b) if active[i].any()]
        if not clips:
            continue
        for kind in (*PATTERNS, "photo"):
            idx = [i for i in clips if params_list[i].scenes[scene_index].background.kind == kind]
            if idx:
                rgb = _render_backgrounds([params_list[i] for i in idx], scene_index, size, device)
                rows = _upload(idx, device, torch.long)
                keep = _upload(active[idx], device, torch.bool)[:, :, None, None, None]
                canvas[rows] = torch.where(keep, rgb, canvas[rows])
        for layer in range(3):
            # main object last, so nothing covers it
            chosen = [(i, _object_at_layer(params_list[i].scenes[scene_index], layer)) for i in clips]
            for shape in SHAPES:
                pairs = [(i, o) for i, o in chosen if o is not None and o.shape == shape]
                if not pairs:
                    continue
                idx = [i for i, _ in pairs]
                alpha = _object_alpha([params_list[i] for i in idx], [o for _, o in pairs], scene_index, size, device)
                alpha = alpha * _upload(active[idx], device)[:, :, None, None]  # (b, T, H, W)
                color = _upload([COLORS[o.color] for _, o in pairs], device) / 255  # (b, 3)
                rows = _upload(idx, device, torch.long)
                canvas[rows] = torch.lerp(canvas[rows], color[:, None, None, None, :], alpha[..., None])
    return (canvas * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def object_masks(params: ClipParams, size: int, all_objects: bool = False) -> Tensor:
    """Where the main object (or any object of the clip) covers a pixel: bool (T, size, size), CPU.

    The main object is the first-mentioned object of the first scene; after a cut it is gone.
    """
    masks = torch.zeros(params.frames, size, size, dtype=torch.bool)
    for scene_index, scene in enumerate(params.scenes):
        active = torch.as_tensor(_active_frames([params], scene_index)[0])
        objects = scene.objects if all_objects else scene.objects[:1] if scene_index == 0 else ()
        for obj in objects:
            alpha = _object_alpha([params], [obj], scene_index, size, torch.device("cpu"))[0]  # (T, H, W)
            masks |= (alpha > 0.5) & active[:, None, None]
    return masks


def _object_at_layer(scene: Scene, layer: int) -> ObjectParams | None:
    n = len(scene.objects)
    return scene.objects[n - 1 - layer] if layer < n else None


def _active_frames(params_list: list[ClipParams], scene_index: int) -> np.ndarray:
    t = np.arange(params_list[0].frames)
    out = np.zeros((len(params_list), len(t)), dtype=bool)
    for i, p in enumerate(params_list):
        if scene_index < len(p.scenes):
            start, end = p.scene_span(scene_index)
            out[i] = (t >= start) & (t < end)
    return out


def _scene_time(params_list: list[ClipParams], scene_index: int) -> np.ndarray:
    """Frames since the scene began (B, T); negative before it (those frames are masked out)."""
    t = np.arange(params_list[0].frames, dtype=np.float64)
    return np.stack([t - p.scene_span(scene_index)[0] for p in params_list])


def _camera_offsets(params_list: list[ClipParams], scene_index: int) -> np.ndarray:
    """World offset of the camera (B, T, 2): screen + offset = scene coordinates."""
    tau = _scene_time(params_list, scene_index)
    v = np.array([DIRECTIONS[p.camera] if p.camera else (0.0, 0.0) for p in params_list]) * CAMERA_SPEED
    return tau[:, :, None] * v[:, None, :]


def _upload(values, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Host values -> `device` without a host sync (pinned, non-blocking): a plain copy from pageable
    memory waits for all queued GPU work, so rendering could never overlap the training step."""
    t = torch.as_tensor(np.asarray(values), dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _pixel_grid(size: int, device: torch.device) -> Tensor:
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], dim=-1)  # (H, W, 2) pixel centres in [0, 1]


def _render_backgrounds(params_list: list[ClipParams], scene_index: int, size: int, device: torch.device) -> Tensor:
    """Backgrounds of one kind: (b, T, H, W, 3) in [0, 1]."""
    bgs = [p.scenes[scene_index].background for p in params_list]
    tau = _scene_time(params_list, scene_index)  # (b, T)
    drift = np.array([DIRECTIONS[g.pan] if g.pan else (0.0, 0.0) for g in bgs]) * 0.5 * CAMERA_SPEED  # (b, 2)
    offset = _camera_offsets(params_list, scene_index) + tau[:, :, None] * drift[:, None, :]  # (b, T, 2)
    zoom = np.exp(tau * np.array([g.zoom for g in bgs])[:, None])  # (b, T)
    f32 = functools.partial(_upload, device=device)
    grid = _pixel_grid(size, device)
    # zoom about the frame centre, then shift: background coordinates of every pixel, (b, T, H, W, 2)
    coords = (grid - 0.5) / f32(zoom)[:, :, None, None, None] + 0.5 + f32(offset)[:, :, None, None, :]
    kind = bgs[0].kind
    if kind == "photo":
        photos = _photo_bank(device)[_upload([_PHOTO_NAMES.index(g.photo) for g in bgs], device, torch.long)]
        return _sample_textures(photos, coords, bgs)
    if kind == "noise":
        amount = _sample_textures(
            _upload(torch.stack([_noise_texture(g.noise_seed) for g in bgs]), device), coords, bgs
        )
        amount = amount[..., :1]
    else:
        angle = f32([g.angle for g in bgs])[:, None, None, None]
        along = (coords[..., 0] - 0.5) * torch.cos(angle) + (coords[..., 1] - 0.5) * torch.sin(angle)
        across = -(coords[..., 0] - 0.5) * torch.sin(angle) + (coords[..., 1] - 0.5) * torch.cos(angle)
        period = f32([g.period for g in bgs])[:, None, None, None]
        if kind == "flat":
            amount = torch.zeros_like(along)
        elif kind == "gradient":
            amount = (along + 0.5).clamp(0, 1)
        elif kind == "stripes":
            amount = _soft_square_wave(along, period, size)
        else:
            a, c = _soft_square_wave(along, period, size), _soft_square_wave(across, period, size)
            amount = a + c - 2 * a * c  # soft xor
        amount = amount[..., None]
    c0 = f32([COLORS[g.colors[0]] for g in bgs]) / 255
    c1 = f32([COLORS[g.colors[1]] for g in bgs]) / 255
    return torch.lerp(c0[:, None, None, None, :], c1[:, None, None, None, :], amount)


def _soft_square_wave(x: Tensor, period: Tensor, size: int) -> Tensor:
    """0/1 bands of width period/2 with one-pixel anti-aliased edges (moving stripes do not flicker)."""
    s = torch.sin(2 * math.pi * x / period)
    # near a crossing sin(2 pi x / p) ~ 2 pi d / p for a distance d, so this is the distance in pixels
    return (0.5 + s * period * size / (2 * math.pi)).clamp(0, 1)


def _sample_textures(textures: Tensor, coords: Tensor, bgs: list[Background]) -> Tensor:
    """textures (b, C, S, S) sampled at coords (b, T, H, W, 2) through each background's crop."""
    b, t, h, w, _ = coords.shape
    view = _upload([g.view for g in bgs], coords.device)  # (b, 3)
    scale = view[:, 2].abs()[:, None, None, None, None]
    flipped = coords.clone()
    flipped[..., 0] = torch.where(view[:, 2, None, None, None] < 0, 1.0 - coords[..., 0], coords[..., 0])
    uv = view[:, None, None, None, :2] + flipped * scale  # texture coordinates in [0, 1] (wraps by mirroring)
    out = F.grid_sample(
        textures, (uv * 2 - 1).reshape(b, t * h, w, 2), mode="bilinear", padding_mode="reflection", align_corners=False
    )  # (b, C, T*H, W)
    return out.reshape(b, -1, t, h, w).permute(0, 2, 3, 4, 1)


@functools.lru_cache(maxsize=4)
def _photo_bank(device: torch.device) -> Tensor:
    """All photos as one (P, 3, S, S) float tensor in [0, 1]; loaded once per device."""
    import skimage.data

    out = []
    for name in _PHOTO_NAMES:
        photo = PHOTOS[name]
        img = np.asarray(getattr(skimage.data, photo.loader)(), dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = img[..., None] * np.asarray(photo.tint, dtype=np.float32)
        img = img[..., :3]
        side = min(img.shape[:2])
        y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        tile = torch.from_numpy(np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side])).permute(2, 0, 1)
        tile = F.interpolate(tile[None], size=(_PHOTO_RES, _PHOTO_RES), mode="bilinear", antialias=True)[0]
        out.append(tile.clamp(0, 1))
    return torch.stack(out).to(device)


def _noise_texture(seed: int) -> Tensor:
    """Smooth value noise, (1, 64, 64) in [0, 1]: two octaves of bicubic-upsampled random grids."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 5, 5, generator=gen)
    fine = torch.rand(1, 1, 14, 14, generator=gen)
    up = functools.partial(F.interpolate, size=(64, 64), mode="bicubic", align_corners=True)
    noise = (up(coarse) + 0.4 * up(fine))[0]
    return (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-6)


def _object_alpha(
    params_list: list[ClipParams], objects: list[ObjectParams], scene_index: int, size: int, device: torch.device
) -> Tensor:
    """Coverage in [0, 1] of one object per clip, all of one shape: (b, T, H, W)."""
    frames = params_list[0].frames
    start = [p.scene_span(scene_index)[0] for p in params_list]
    centres = np.stack(
        [np.concatenate([np.zeros((s, 2)), o.trajectory(frames - s)]) for s, o in zip(start, objects, strict=True)]
    ) - _camera_offsets(params_list, scene_index)  # (b, T, 2) on screen
    p = _pixel_grid(size, device) - _upload(centres, device)[:, :, None, None, :]  # (b, T, H, W, 2) from the centre
    r = _upload([o.radius for o in objects], device)[:, None, None, None]
    sdf = _SDF[objects[0].shape](p[..., 0], p[..., 1], r)
    return (0.5 - sdf * size).clamp(0, 1)  # one-pixel anti-aliased edge


def _sdf_box(x: Tensor, y: Tensor, hx: Tensor, hy: Tensor) -> Tensor:
    dx, dy = x.abs() - hx, y.abs() - hy
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0)


def _sdf_triangle(x: Tensor, y: Tensor, r: Tensor) -> Tensor:
    """Equilateral triangle pointing up, centred on its centroid (Inigo Quilez's exact distance)."""
    k = math.sqrt(3.0)
    a = 1.3 * r  # half side, so its area matches the ball's
    px, py = x.abs() - a, -y + a / k  # flip y: screen y grows downwards
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.minimum(torch.maximum(px, -2 * a), torch.zeros_like(px))
    return -torch.sqrt(px**2 + py**2) * torch.sign(py)


_SDF = {  # signed distance in frame fractions, negative inside; r is the object's radius
    "ball": lambda x, y, r: torch.sqrt(x**2 + y**2) - r,
    "square": lambda x, y, r: _sdf_box(x, y, 0.85 * r, 0.85 * r),
    "triangle": _sdf_triangle,
    "diamond": lambda x, y, r: _sdf_box((x + y) * _DIAG, (x - y) * _DIAG, 0.85 * r, 0.85 * r),
    "ring": lambda x, y, r: (torch.sqrt(x**2 + y**2) - 0.75 * r).abs() - 0.25 * r,
    "cross": lambda x, y, r: torch.minimum(_sdf_box(x, y, r, 0.3 * r), _sdf_box(x, y, 0.3 * r, r)),
}


# ---------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write one procedural clip as an MP4 and print its caption.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output .mp4 path")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--fps", type=int, default=16)
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".mp4":
        parser.error(f"--out must be an .mp4 file, got {args.out}")
    if args.size < 8 or args.size % 2:
        parser.error(f"--size must be an even number >= 8 (H.264 yuv420p), got {args.size}")
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    from engine.video_io import write_video

    params = sample_clip(args.seed, args.frames)
    video = render([params], args.size)[0].numpy()
    write_video(video, args.out, fps=args.fps)
    print(caption(params))


if __name__ == "__main__":
    main()
