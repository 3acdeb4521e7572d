"""Procedural videos whose content complexity varies across clips and over time.

A clip is a sequence of *scenes* separated by hard cuts. Each scene has a background texture
(a faint pattern up to dense high-frequency ones) and zero or more objects; the scene is split
into *segments* that differ in motion speed (static stretches, slow and fast pans and object
motion). Every drawn parameter is returned in the metadata, and the per-frame complexity score
is a fixed function of them (:func:`frame_complexity`), so the score says exactly what was
drawn. The same seed always gives the same clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from adaptok.data.writer import ClipTask, RawClip

__all__ = [
    "CALM_SCENE_PROBABILITY",
    "CALM_TEXTURE_RANGE",
    "COMPLEXITY_CLASSES",
    "COMPLEXITY_THRESHOLDS",
    "MAX_OBJECTS",
    "MAX_TEXTURE_CYCLES",
    "SceneLayout",
    "SyntheticClip",
    "SyntheticSegment",
    "complexity_label",
    "frame_complexity",
    "generate_clip",
    "max_motion_speed",
    "periodic_texture",
    "read_synthetic_clip",
    "synthetic_tasks",
]

MAX_OBJECTS = 4
"""Largest number of moving objects in one scene."""

COMPLEXITY_CLASSES = ("calm", "moderate", "busy", "hectic")
"""Class names of the four clip-level complexity buckets (label = bucket index)."""

COMPLEXITY_THRESHOLDS = (0.22, 0.37, 0.5)
"""Mean-complexity bucket edges (about the quartiles over seeds, so classes are balanced)."""

DEFAULT_SIZE = 64
"""Frame size (square) when no size is asked for."""

_MIN_SCENE_FRAMES = 4
_MIN_SEGMENT_FRAMES = 3
_STATIC_PROBABILITY = 0.25
CALM_SCENE_PROBABILITY = 0.35
"""Share of scenes drawn *calm*: a faint background pattern (texture level in
``CALM_TEXTURE_RANGE``), at most one object, never moving. Calm and busy scenes side by side
(within a clip and across clips) are what content-adaptive token allocation exploits: a calm
block needs a few tokens, a busy one all of them."""

CALM_TEXTURE_RANGE = (0.1, 0.19)
"""Texture level of a calm scene's background, drawn uniformly (below the busy scenes' 0.2).
Not 0: a flat, empty, static clip is reconstructed exactly by its block mean colour (PSNR
~150 dB), so no tokenizer can beat that baseline on it, and 7 of the demo's 63 test clips
were such clips (docs/demo_weights.md). A faint one-cycle pattern costs a few tokens, once
per scene (later blocks of a static scene can lean on the earlier ones)."""

MAX_TEXTURE_CYCLES = 2
"""Most sine cycles of a background texture across the frame (texture level 1). Low enough
that a few tokens can describe the pattern, so texture costs tokens instead of being detail
no token count of the demo tokenizer can recover. At 5 cycles even per-block means on an 8x8
grid (192 numbers per block) gained only +2.6 dB over the block's mean colour on the test
clips (`docs/tokenizer_collapse.md`), so no 16-token tokenizer could beat it by 3 dB."""


@dataclass(frozen=True)
class SceneLayout:
    """How a clip is cut into scenes, and which of them are calm.

    The default is the demo data's layout (1 to 4 scenes, each calm with probability
    ``CALM_SCENE_PROBABILITY``) and draws exactly the same random numbers as before the
    layout existed, so clips of a seed are unchanged. More scenes per clip that alternate
    calm / busy put calm and busy blocks in the same 16-frame window: what per-clip allocation
    can exploit. With the demo tokenizer, 192 test-stream clips of seed 5, the per-clip oracle
    gain over uniform at 25 % of the tokens was +0.32 dB with the default layout and +0.49 dB
    with ``SceneLayout(3, 6, alternate_calm=True, calm_probability=0.5)`` (docs/demo_weights.md,
    "Demo data with more contrast within a clip").

    Attributes:
        min_scenes: Fewest scenes drawn (>= 1; fewer result when the clip is too short for
            scenes of ``_MIN_SCENE_FRAMES`` frames).
        max_scenes: Most scenes drawn (>= ``min_scenes``).
        alternate_calm: Draw only the first scene's calmness; later scenes alternate between
            calm and busy.
        calm_probability: Chance that a scene (with ``alternate_calm``, the first scene) is
            calm.
    """

    min_scenes: int = 1
    max_scenes: int = 4
    alternate_calm: bool = False
    calm_probability: float = CALM_SCENE_PROBABILITY

    def __post_init__(self) -> None:
        if not 1 <= self.min_scenes <= self.max_scenes:
            raise ValueError(
                f"need 1 <= min_scenes <= max_scenes, got {self.min_scenes}, {self.max_scenes}"
            )
        if not 0.0 <= self.calm_probability <= 1.0:
            raise ValueError(f"calm_probability must be in [0, 1], got {self.calm_probability}")


@dataclass(frozen=True)
class SyntheticSegment:
    """The drawn parameters of one stretch of frames ``[start, end)``.

    Attributes:
        start: First frame of the segment.
        end: One past the last frame.
        scene: Index of the scene (scenes are separated by cuts).
        motion_speed: Pan and object speed in pixels per frame (0 = static).
        num_objects: Number of objects in the scene.
        texture_level: Background/object texture density in [0, 1] (0 = flat colours).
    """

    start: int
    end: int
    scene: int
    motion_speed: float
    num_objects: int
    texture_level: float


@dataclass(frozen=True)
class SyntheticClip:
    """A generated clip.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)``.
        metadata: JSON-serialisable dict: ``seed``, ``num_frames``, ``height``, ``width``,
            ``fps``, ``segments`` (list of :class:`SyntheticSegment` dicts), ``cut_positions``
            (first frame of every scene after the first), ``frame_complexity`` (``T`` floats in
            [0, 1]), ``label`` and ``class_name`` (clip complexity bucket).
    """

    frames: np.ndarray
    metadata: dict


def max_motion_speed(height: int, width: int) -> float:
    """Speed (pixels per frame) that counts as full temporal complexity: 4% of the short side.

    Also the fastest drawn pan; objects move at up to 1.6x the pan speed. At 10% a fast
    object crossed a third of the frame within one 4-frame block, which no 16-token block of
    the demo tokenizer can describe.
    """
    return 0.04 * min(height, width)


def frame_complexity(
    segments: list[SyntheticSegment], cut_positions: list[int], max_speed: float
) -> list[float]:
    """Per-frame complexity in [0, 1] as a fixed function of the drawn parameters.

    ``spatial = 0.6 * texture_level + 0.4 * num_objects / MAX_OBJECTS``;
    ``temporal = min(motion_speed / max_speed, 1) * min(texture_level + num_objects /
    MAX_OBJECTS, 1)`` (motion of a flat, empty scene changes no pixel), except on a cut frame,
    where the whole picture is new and ``temporal = 1``. The score is
    ``0.5 * spatial + 0.5 * temporal``.

    Args:
        segments: Segments covering ``[0, T)`` in order.
        cut_positions: Frames that start a new scene.
        max_speed: Speed counted as full motion (see :func:`max_motion_speed`).

    Returns:
        ``T`` floats in [0, 1].
    """
    cuts = set(cut_positions)
    scores: list[float] = []
    for segment in segments:
        spatial = 0.6 * segment.texture_level + 0.4 * segment.num_objects / MAX_OBJECTS
        visible = min(segment.texture_level + segment.num_objects / MAX_OBJECTS, 1.0)
        motion = min(segment.motion_speed / max_speed, 1.0) * visible
        for t in range(segment.start, segment.end):
            temporal = 1.0 if t in cuts else motion
            scores.append(float(np.clip(0.5 * spatial + 0.5 * temporal, 0.0, 1.0)))
    return scores


def complexity_label(scores: list[float]) -> int:
    """Clip label: the bucket of ``COMPLEXITY_THRESHOLDS`` that holds the mean frame complexity."""
    return int(np.searchsorted(COMPLEXITY_THRESHOLDS, float(np.mean(scores)), side="right"))


def _split(rng: np.random.Generator, start: int, end: int, parts: int, min_len: int) -> list[int]:
    """Sorted boundaries that cut ``[start, end)`` into at most ``parts`` pieces >= ``min_len``."""
    parts = max(1, min(parts, (end - start) // min_len))
    slack = (end - start) - parts * min_len
    extra = np.sort(rng.integers(0, slack + 1, size=parts - 1))
    return [start + (i + 1) * min_len + int(e) for i, e in enumerate(extra)]


def _draw_segments(
    rng: np.random.Generator, num_frames: int, max_speed: float, layout: SceneLayout
) -> tuple[list[SyntheticSegment], list[int]]:
    scenes = int(rng.integers(layout.min_scenes, layout.max_scenes + 1))
    cuts = _split(rng, 0, num_frames, scenes, _MIN_SCENE_FRAMES)
    scene_bounds = list(zip([0, *cuts], [*cuts, num_frames]))
    segments: list[SyntheticSegment] = []
    first_calm = layout.alternate_calm and rng.random() < layout.calm_probability
    for scene, (scene_start, scene_end) in enumerate(scene_bounds):
        if layout.alternate_calm:
            calm = first_calm == (scene % 2 == 0)
        else:
            calm = rng.random() < layout.calm_probability
        if calm:
            texture = round(float(rng.uniform(*CALM_TEXTURE_RANGE)), 3)
            num_objects = int(rng.integers(0, 2))
        else:
            texture = round(float(rng.uniform(0.2, 1.0)), 3)
            num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
        inner = _split(rng, scene_start, scene_end, int(rng.integers(1, 4)), _MIN_SEGMENT_FRAMES)
        for start, end in zip([scene_start, *inner], [*inner, scene_end]):
            moving = not calm and rng.random() >= _STATIC_PROBABILITY
            speed = round(float(rng.uniform(0.05, 1.0)) * max_speed, 3) if moving else 0.0
            segments.append(SyntheticSegment(start, end, scene, speed, num_objects, texture))
    return segments, cuts


def periodic_texture(rng: np.random.Generator, height: int, width: int, level: float) -> np.ndarray:
    """Background in [0, 1], shape ``(H, W, 3)``, periodic in both axes (so it can be rolled).

    A sum of six sinusoidal gratings with up to ``1 + level * (MAX_TEXTURE_CYCLES - 1)``
    cycles across the frame and an amplitude growing with ``level``; no pixel noise.

    Args:
        rng: Random generator (draws the colour, frequencies, phases and tint).
        height: ``H``.
        width: ``W``.
        level: Texture level in [0, 1]; 0 gives a flat colour.

    Returns:
        ``float64`` array ``(H, W, 3)`` in [0, 1].
    """
    base = rng.uniform(0.15, 0.85, size=3)
    if level == 0.0:
        return np.broadcast_to(base, (height, width, 3)).copy()
    yy, xx = np.mgrid[0:height, 0:width]
    pattern = np.zeros((height, width))
    max_cycles = 1 + int(round(level * (MAX_TEXTURE_CYCLES - 1)))
    for _ in range(6):
        fy, fx = rng.integers(0, max_cycles + 1, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        pattern += np.sin(2 * np.pi * (fy * yy / height + fx * xx / width) + phase)
    tint = rng.uniform(-1.0, 1.0, size=3)
    texture = base + 0.5 * level * (pattern / 3)[..., None] * (0.6 + 0.4 * tint)
    return np.clip(texture, 0.0, 1.0)


class _SceneRenderer:
    """Renders the frames of one scene; keeps positions across its segments."""

    def __init__(
        self, rng: np.random.Generator, height: int, width: int, texture: float, objects: int
    ) -> None:
        self.height, self.width, self.texture = height, width, texture
        self.background = periodic_texture(rng, height, width, texture)
        angle = rng.uniform(0, 2 * np.pi)
        self.pan_direction = np.array([np.sin(angle), np.cos(angle)])
        self.pan_offset = np.zeros(2)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float64)
        short = min(height, width)
        self.objects = []
        for _ in range(objects):
            angle = rng.uniform(0, 2 * np.pi)
            self.objects.append(
                {
                    "ellipse": bool(rng.random() < 0.5),
                    "radius": rng.uniform(0.06, 0.18, size=2) * short,
                    "position": rng.uniform([0, 0], [height, width]),
                    "direction": np.array([np.sin(angle), np.cos(angle)]),
                    "speed_factor": rng.uniform(0.6, 1.6),
                    "color": rng.uniform(0.0, 1.0, size=3),
                    "stripe_period": rng.uniform(0.5, 1.0) * short,
                }
            )

    def _draw(self) -> np.ndarray:
        shift = np.round(self.pan_offset).astype(int)
        canvas = np.roll(self.background, shift=(shift[0], shift[1]), axis=(0, 1)).copy()
        for obj in self.objects:
            dy = (self.yy - obj["position"][0]) / obj["radius"][0]
            dx = (self.xx - obj["position"][1]) / obj["radius"][1]
            mask = dy**2 + dx**2 <= 1.0 if obj["ellipse"] else (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * dx * obj["radius"][1] / obj["stripe_period"])
            shade = 1.0 - 0.6 * self.texture * stripes
            canvas[mask] = obj["color"] * shade[mask, None]
        return canvas

    def _advance(self, speed: float) -> None:
        self.pan_offset += speed * self.pan_direction
        limits = np.array([self.height, self.width], dtype=np.float64)
        for obj in self.objects:
            position = obj["position"] + speed * obj["speed_factor"] * obj["direction"]
            for axis in range(2):
                if position[axis] < 0 or position[axis] > limits[axis]:
                    obj["direction"][axis] *= -1
                    position[axis] = np.clip(position[axis], 0, limits[axis])
            obj["position"] = position

    def render(self, num_frames: int, speed: float, first_in_scene: bool) -> list[np.ndarray]:
        """Frames of one segment; motion happens between frames (none before a scene's first)."""
        frames = []
        for t in range(num_frames):
            if not (first_in_scene and t == 0) and speed > 0:
                self._advance(speed)
            frames.append(self._draw())
        return frames


def generate_clip(
    seed: int,
    num_frames: int = 32,
    height: int = 64,
    width: int = 64,
    fps: float = 25.0,
    layout: SceneLayout | None = None,
) -> SyntheticClip:
    """Generate one deterministic clip.

    Args:
        seed: Seed; equal seeds (and layouts) give identical frames and metadata.
        num_frames: Clip length ``T``.
        height: Frame height ``H``.
        width: Frame width ``W``.
        fps: Frame rate recorded in the metadata.
        layout: Scene cuts and calm scenes; None: the default :class:`SceneLayout` (then the
            metadata has no ``scene_layout`` entry, as before layouts existed).

    Returns:
        A :class:`SyntheticClip` with frames ``(T, H, W, 3)`` and the drawn parameters.
    """
    if num_frames < 1 or height < 8 or width < 8:
        raise ValueError(f"clip too small: T={num_frames}, H={height}, W={width}")
    rng = np.random.default_rng(seed)
    max_speed = max_motion_speed(height, width)
    segments, cuts = _draw_segments(rng, num_frames, max_speed, layout or SceneLayout())
    frames: list[np.ndarray] = []
    renderer: _SceneRenderer | None = None
    for segment in segments:
        first_in_scene = renderer is None or segment.start in cuts
        if first_in_scene:
            renderer = _SceneRenderer(
                rng, height, width, segment.texture_level, segment.num_objects
            )
        length = segment.end - segment.start
        frames.extend(renderer.render(length, segment.motion_speed, first_in_scene))
    video = np.round(np.stack(frames) * 255.0).astype(np.uint8)
    scores = frame_complexity(segments, cuts, max_speed)
    label = complexity_label(scores)
    metadata = {
        "seed": int(seed),
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "fps": fps,
        "segments": [asdict(segment) for segment in segments],
        "cut_positions": cuts,
        "frame_complexity": scores,
        "label": label,
        "class_name": COMPLEXITY_CLASSES[label],
    }
    if layout is not None and layout != SceneLayout():
        metadata["scene_layout"] = asdict(layout)
    return SyntheticClip(frames=video, metadata=metadata)


def read_synthetic_clip(
    seed: int, num_frames: int, size: int | None, layout: SceneLayout | None = None
) -> RawClip:
    """Writer reader: a square ``size`` x ``size`` clip (``DEFAULT_SIZE`` when ``None``).

    Args:
        seed: Clip seed.
        num_frames: Clip length.
        size: Frame side.
        layout: Scene layout (:func:`generate_clip`).

    Returns:
        The clip as a :class:`~adaptok.data.writer.RawClip` with all generator metadata.
    """
    side = size or DEFAULT_SIZE
    clip = generate_clip(seed, num_frames=num_frames, height=side, width=side, layout=layout)
    return RawClip(frames=clip.frames, fps=clip.metadata["fps"], metadata=clip.metadata)


_TEST_STREAM = 1
"""``SeedSequence`` spawn key of the test clips' seeds (train/val clips use none)."""


def _clip_seed(seed: int, index: int, stream: int | None) -> int:
    """32-bit seed of clip ``index`` of the set ``seed`` in the train/val (None) or test stream."""
    spawn_key = () if stream is None else (stream,)
    return int(np.random.SeedSequence([seed, index], spawn_key=spawn_key).generate_state(1)[0])


def synthetic_tasks(
    num_clips: int,
    seed: int,
    num_frames: int = 32,
    val_fraction: float = 0.25,
    test_clips: int = 0,
    layout: SceneLayout | None = None,
) -> list[ClipTask]:
    """Writer tasks: ``num_clips`` train/val clips and ``test_clips`` held-out test clips.

    Train/val clip ``i`` uses a seed derived from ``(seed, i)``; an evenly spread
    ``val_fraction`` of them goes to ``val``. Test clips come from an independent seed
    stream (``(seed, j)`` with its own spawn key), and any test seed that equals a train/val
    seed is passed over, so no test clip shares a seed, a key or a source with a train/val
    clip. Labels and class names (complexity buckets) come from the generated metadata.

    Args:
        num_clips: Number of train/val clips.
        seed: Base seed of the whole set.
        num_frames: Frames per clip.
        val_fraction: Share of train/val clips in ``val`` (clip ``i`` is val when
            ``floor((i + 1) * f) > floor(i * f)``).
        test_clips: Number of held-out ``test`` clips (the demo writes a third of ``num_clips``).
        layout: Scene layout of every clip (:func:`generate_clip`); None: the default.

    Returns:
        Tasks with keys ``synthetic_<seed>_<i:06d>`` (train/val) and
        ``synthetic_<seed>_test_<j:06d>`` (test); sources ``synthetic:seed=<clip seed>``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1) or a negative count.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if num_clips < 0 or test_clips < 0:
        raise ValueError(f"clip counts must be >= 0, got {num_clips} and {test_clips}")

    def task(key: str, split: str, clip_seed: int) -> ClipTask:
        return ClipTask(
            key=key,
            split=split,
            label=-1,
            class_name="",
            source=f"synthetic:seed={clip_seed}",
            read=partial(read_synthetic_clip, clip_seed, num_frames, layout=layout),
        )

    tasks = []
    used: set[int] = set()
    for i in range(num_clips):
        clip_seed = _clip_seed(seed, i, None)
        used.add(clip_seed)
        is_val = int((i + 1) * val_fraction) > int(i * val_fraction)
        tasks.append(task(f"synthetic_{seed}_{i:06d}", "val" if is_val else "train", clip_seed))
    index = 0
    for j in range(test_clips):
        while (clip_seed := _clip_seed(seed, index, _TEST_STREAM)) in used:
            index += 1
        used.add(clip_seed)
        index += 1
        tasks.append(task(f"synthetic_{seed}_test_{j:06d}", "test", clip_seed))
    return tasks
