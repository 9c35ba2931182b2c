"""Real input images: the shipped sample pairs and user-supplied ``--src/--bgr`` pairs.

Tensors are ``(B, 3, H, W)`` float32 RGB in [0, 1]; alpha is ``(B, 1, H, W)`` in [0, 1].
See ``data/samples/SOURCES.md`` for where each sample photo comes from and its licence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made, so the constants here stay light
    from torch import Tensor

SAMPLES_DIR = Path(__file__).parent / "data" / "samples"
SAMPLE_NAMES = ("rocket_coffee", "hubble_astronaut", "horse_grass")
_SHIPPED = {"small": (288, 512), "hd": (1080, 1920)}


class InputError(ValueError):
    """An input image that cannot be used; the message names the file and what is accepted."""


@dataclass(frozen=True)
class Pair:
    """One ``src``/``bgr`` pair (and ground-truth alpha when known), ``(3, H, W)`` float32 in [0, 1]."""

    name: str
    src: Tensor
    bgr: Tensor
    pha: Optional[Tensor] = None
    conversion: str = ""  # what loading converted (e.g. "src: 16-bit grayscale (mode I;16) / 65535 -> RGB")


# PIL image modes --src/--bgr accept, and what loading does with each (see _read_array); any other mode (LAB,
# HSV, ...: channels that are not RGB or gray, which PIL would copy into R, G, B unconverted) is refused
ACCEPTED_MODES = {
    "RGB": "as is",
    "RGBA": "alpha composited over black",
    "LA": "alpha composited over black, gray -> RGB",
    "PA": "alpha composited over black, palette -> RGB",
    "P": "palette -> RGB (transparency composited over black)",
    "L": "gray -> RGB",
    "1": "bilevel -> RGB",
    "CMYK": "CMYK -> RGB (PIL's conversion, no ICC profile)",
    "YCbCr": "YCbCr -> RGB",
    "RGBX": "padding byte dropped",
    "I;16": "16-bit gray / 65535 -> RGB",
    "I": "32-bit integer gray / 255 or / 65535 (whichever range its values fit) -> RGB",
    "F": "float gray in [0, 1] -> RGB",
}


def _accepted(mode: str) -> bool:
    return mode in ACCEPTED_MODES or mode.startswith("I;16")


def _open_rgb(path: Path, role: str):
    """Open ``path`` (EXIF orientation applied) and composite an alpha channel over black; returns the image
    (RGB after compositing, else its own mode) and a note of the compositing ("" without alpha). Modes:
    :data:`ACCEPTED_MODES`; for 16-bit, 32-bit integer and float images see :func:`_read_array`.

    Raises:
        InputError: naming the file: a directory, missing, unreadable, or an image mode not in
            :data:`ACCEPTED_MODES` (named with the accepted ones)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.is_dir():
        raise InputError(f"--{role} {str(path)!r} is a directory, not an image file")
    if not path.is_file():
        raise InputError(f"--{role} {str(path)!r}: no such file")
    try:
        im = Image.open(path)
        im.load()
        im = ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"--{role} {str(path)!r} is not a readable image ({type(e).__name__}: {e})") from None
    if not _accepted(im.mode):
        raise InputError(f"--{role} {str(path)!r} has image mode {im.mode}, which is not RGB or gray; accepted modes: "
                         f"{', '.join(ACCEPTED_MODES)} (I;16 in any byte order); save it as 8- or 16-bit RGB or grayscale")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        mode = im.mode
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        see_through = int((alpha < 255).sum())
        bg = Image.new("RGB", im.size, (0, 0, 0))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        # alpha is composited over black: the model takes RGB only
        return bg, (f"mode {mode} -> RGB, alpha composited over black ({see_through} of {alpha.size} pixels not "
                    f"opaque)")
    return im, ""


def _read_array(path: Path, role: str) -> Tuple[np.ndarray, str]:
    """``(H, W, 3)`` float32 RGB in [0, 1] from any PIL-readable file, converted by the image's real range,
    and a note of what was converted (empty for plain 8-bit RGB).

    8-bit modes (L, P, CMYK, RGBA, ...) are divided by 255; 16-bit grayscale (``I;16*``) by 65535; 32-bit
    integer (``I``) by 255 or 65535, whichever range its values fit; float (``F``) is taken as is when it lies
    in [0, 1]; alpha (RGBA, LA, PA, P with transparency) is composited over black. Raises InputError (file and
    mode named) for values outside those ranges and for modes not in :data:`ACCEPTED_MODES`."""
    im, note = _open_rgb(path, role)
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.float32) / 255.0, note
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if mode == "F":
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise InputError(f"--{role} {str(path)!r} is a float image (mode F) with values in [{lo:g}, {hi:g}]; "
                                 f"expected [0, 1] (save it as 8- or 16-bit, or scale it to [0, 1])")
            scale, note = 1.0, "float grayscale (mode F) in [0, 1] -> RGB"
        else:
            if lo < 0 or hi > 65535:
                raise InputError(f"--{role} {str(path)!r} is a {mode} integer image with values in [{lo:g}, {hi:g}]; "
                                 f"expected 8-bit (0-255) or 16-bit (0-65535)")
            scale = 65535.0 if (mode.startswith("I;16") or hi > 255) else 255.0
            note = f"{'16' if scale == 65535.0 else '8'}-bit grayscale (mode {mode}) / {scale:g} -> RGB"
        gray = np.clip(arr / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=2), note
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, f"mode {mode} -> 8-bit RGB"


def _to_tensor(im) -> Tensor:
    import torch

    arr = im if isinstance(im, np.ndarray) else np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).unsqueeze(0)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()


def _resize(im, hw: Tuple[int, int]):
    from PIL import Image

    if (im.height, im.width) == tuple(hw):
        return im
    return im.resize((hw[1], hw[0]), Image.BILINEAR)


def load_sample(name: str, hw: Tuple[int, int]) -> Pair:
    """Load shipped sample ``name`` resized to ``hw = (H, W)`` (from the nearest larger shipped size).

    Raises:
        InputError: unknown sample name.
    """
    from PIL import Image

    if name not in SAMPLE_NAMES:
        raise InputError(f"unknown sample {name!r}; expected one of {list(SAMPLE_NAMES)}")
    tag = "small" if hw[0] <= _SHIPPED["small"][0] and hw[1] <= _SHIPPED["small"][1] else "hd"
    ext = "png" if tag == "small" else "jpg"
    src = _resize(Image.open(SAMPLES_DIR / f"{name}_{tag}_src.{ext}").convert("RGB"), hw)
    bgr = _resize(Image.open(SAMPLES_DIR / f"{name}_{tag}_bgr.{ext}").convert("RGB"), hw)
    pha = _resize(Image.open(SAMPLES_DIR / f"{name}_{tag}_pha.png").convert("L"), hw)
    return Pair(name, _to_tensor(src), _to_tensor(bgr), _to_tensor(pha))


def image_size(path: str) -> Tuple[int, int]:
    """(H, W) of the image at ``path`` as the model sees it, after EXIF orientation (from the header,
    without decoding). Raises OSError (PIL's UnidentifiedImageError included) for what is not an image."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 degrees: exif_transpose swaps W and H
            w, h = h, w
    return h, w


def load_user_pair(src_path: str, bgr_path: str, pad: bool = False) -> Pair:
    """Load a user's ``src``/``bgr`` image pair (any PIL-readable format), EXIF orientation applied.

    Converted to float RGB in [0, 1] by each image's real range (8-bit, 16-bit, 32-bit integer, float in
    [0, 1]; see :func:`_read_array`); RGBA is composited over black. ``Pair.conversion`` says what was done.

    Args:
        pad: zero-pad bottom/right to multiples of 4 instead of rejecting other sizes; the harness
            crops outputs back to the original size before comparing.

    Raises:
        InputError: missing or unreadable file, src/bgr of different sizes, or (without ``pad``)
            H or W not a multiple of 4.
    """
    s_arr, s_note = _read_array(Path(src_path), "src")
    b_arr, b_note = _read_array(Path(bgr_path), "bgr")
    if s_arr.shape != b_arr.shape:
        raise InputError(
            f"--src {src_path!r} is {s_arr.shape[1]}x{s_arr.shape[0]} but --bgr {bgr_path!r} is "
            f"{b_arr.shape[1]}x{b_arr.shape[0]} (WxH); they must be the same size"
        )
    src, bgr = _to_tensor(s_arr), _to_tensor(b_arr)
    H, W = src.shape[1:]
    if H % 4 or W % 4:
        if not pad:
            raise InputError(
                f"--src/--bgr are {W}x{H} (WxH); height and width must be multiples of 4. "
                f"Pass --pad to zero-pad to {W + (-W) % 4}x{H + (-H) % 4} and crop outputs back"
            )
    notes = "; ".join(f"{role}: {n}" for role, n in (("src", s_note), ("bgr", b_note)) if n)
    return Pair(Path(src_path).stem, src, bgr, None, notes)


def pad_to_multiple(x: Tensor, multiple: int = 4) -> Tuple[Tensor, Tuple[int, int]]:
    """Zero-pad ``x (..., H, W)`` at the bottom/right to multiples of ``multiple``; return it and (H, W)."""
    import torch

    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph))
    return x, (H, W)


def resize_pair(pair: Pair, hw: Tuple[int, int]) -> Pair:
    """Bilinearly resize a user pair to ``hw`` (used to validate at a second resolution)."""
    import torch

    if tuple(pair.src.shape[1:]) == tuple(hw):
        return pair
    f = torch.nn.functional.interpolate
    kw = dict(size=hw, mode="bilinear", align_corners=False, antialias=True)
    return Pair(pair.name, f(pair.src[None], **kw)[0].clamp(0, 1), f(pair.bgr[None], **kw)[0].clamp(0, 1), None)


def stack(pairs: Sequence[Pair]) -> Tuple[Tensor, Tensor]:
    """Batch pairs into ``(src, bgr)``, each ``(B, 3, H, W)``."""
    import torch

    return torch.stack([p.src for p in pairs]), torch.stack([p.bgr for p in pairs])


def batch_of(hw: Tuple[int, int], batch: int, first: int = 0) -> Tuple[List[str], Tensor, Tensor]:
    """``batch`` different shipped samples (cycling from index ``first``) at ``hw``: names, src, bgr."""
    pairs = [load_sample(SAMPLE_NAMES[(first + k) % len(SAMPLE_NAMES)], hw) for k in range(batch)]
    src, bgr = stack(pairs)
    return [p.name for p in pairs], src, bgr
