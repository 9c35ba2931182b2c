"""Rebuild the shipped sample pairs from scikit-image's bundled public-domain / CC0 photos.

Developer-only script (needs ``scikit-image`` and ``scipy``); the harness itself only reads the PNG/JPEG
files written here. Each pair is ``src = pha * fgr + (1 - pha) * bgr`` where ``fgr`` and ``bgr`` are
real photos and ``pha`` is a soft matte derived from real image content (a colour key, a luminance key,
or a CC0 silhouette), blurred for soft edges. Sources and licences are written to ``SOURCES.md``.

Run: ``python -m harness.data.make_samples``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).parent / "samples"
SIZES = {"small": (288, 512), "hd": (1080, 1920)}


def _fit(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (bicubic) to ``hw``; float in [0, 1]."""
    h, w = img.shape[:2]
    th, tw = hw
    scale = max(th / h, tw / w)
    ch, cw = round(th / scale), round(tw / scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    if crop.dtype != np.uint8:
        crop = (np.clip(crop, 0, 1) * 255).round().astype(np.uint8)
    mode = "L" if crop.ndim == 2 else "RGB"
    out = Image.fromarray(crop, mode).resize((tw, th), Image.BICUBIC)
    return np.asarray(out).astype(np.float32) / 255.0


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def build() -> None:
    import skimage.data as data
    from scipy import ndimage

    OUT.mkdir(parents=True, exist_ok=True)
    rocket = data.rocket()
    hubble = data.hubble_deep_field()
    horse = (~data.horse()).astype(np.float32)  # True = background in the original
    chelsea = data.chelsea()
    pairs = {}
    for tag, hw in SIZES.items():
        blur = hw[0] / 288.0
        # 1. rocket, towers and lights keyed out of the blue dusk sky (blue-minus-red key), over coffee.
        fg = _fit(rocket, hw)
        blueness = fg[..., 2] - fg[..., 0]
        pha = 1.0 - _smoothstep(ndimage.gaussian_filter(blueness, 0.8 * blur), 0.06, 0.14)
        pairs[f"rocket_coffee_{tag}"] = (fg, _fit(data.coffee(), hw), pha)
        # 2. Hubble deep field galaxies, luminance-keyed (naturally semi-transparent), over the astronaut.
        fg = _fit(hubble, hw)
        lum = fg.mean(axis=2)
        pha = _smoothstep(ndimage.gaussian_filter(lum, 1.5 * blur), 0.07, 0.3)
        pairs[f"hubble_astronaut_{tag}"] = (np.clip(fg * 1.6, 0, 1), _fit(data.astronaut(), hw), pha)
        # 3. CC0 horse silhouette filled with Chelsea's fur, feathered edges, over the grass photo.
        mask = _fit(horse, hw)
        pha = np.clip(ndimage.gaussian_filter(mask, 2.5 * blur), 0, 1)
        pairs[f"horse_grass_{tag}"] = (_fit(chelsea, hw), _rgb(_fit(data.grass(), hw)), pha)
    for name, (fg, bg, pha) in pairs.items():
        fg, bg = _rgb(fg), _rgb(bg)
        src = pha[..., None] * fg + (1 - pha[..., None]) * bg
        ext = "png" if name.endswith("small") else "jpg"
        for part, arr in (("src", src), ("bgr", bg)):
            im = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8), "RGB")
            if ext == "jpg":
                im.save(OUT / f"{name}_{part}.jpg", quality=92, subsampling=0)
            else:
                im.save(OUT / f"{name}_{part}.png", optimize=True)
        Image.fromarray((pha * 255).round().astype(np.uint8), "L").save(OUT / f"{name}_pha.png", optimize=True)


if __name__ == "__main__":
    build()
