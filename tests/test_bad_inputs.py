"""Inputs the harness must refuse loudly, driven through the CLI as a user would (issue 15, first part):
exit 2 with a message naming the file and what it looks like, never a traceback or a silent green run."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import inputs

ROOT = Path(__file__).resolve().parent.parent


def _run(*args):
    return subprocess.run([sys.executable, "-m", "harness", "run", "--profile", "smoke", "--filter",
                           "exporter=torchscript,refine_mode=full,batch=1", "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _lfs(tmp):
    p = tmp / "lfs.pth"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 14632\n")
    return p, "Git LFS pointer"


def _text(tmp):
    p = tmp / "notes.pth"
    p.write_text("these are not weights\n")
    return p, "text file"


def _zip(tmp):
    p = tmp / "archive.pth"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    return p, "zip archive without data.pkl"


def _empty(tmp):
    p = tmp / "empty.pth"
    p.write_bytes(b"")
    return p, "empty"


def _directory(tmp):
    p = tmp / "ckpt_dir"
    p.mkdir()
    return p, "is a directory"


def _pickled_code(tmp):
    import pickle

    p = tmp / "evil.pth"
    p.write_bytes(pickle.dumps(np.float64(1.0)))  # a global (numpy) other than tensors
    return p, "never runs code"


@pytest.mark.parametrize("make", [_lfs, _text, _zip, _empty, _directory, _pickled_code])
def test_bad_checkpoints_exit_2_with_what_the_file_looks_like(tmp_path, make):
    path, expected = make(tmp_path)
    proc = _run("--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "weights_only=False" not in proc.stderr  # never advise the unsafe load


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path):
    text = (ROOT / "matrix.yaml").read_text().replace("default_profile: ci\n", "default_profile: ci\ndefault_profile: smoke\n")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(text)
    proc = _run("--config", str(cfg), "--out", str(tmp_path / "out"))
    line = text.splitlines().index("default_profile: smoke") + 1
    assert proc.returncode == 2 and f"m.yaml:{line}: duplicate key 'default_profile'" in proc.stderr


def test_directory_as_src_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    good = tmp_path / "b.png"
    Image.new("RGB", (512, 288)).save(good)
    proc = _run("--src", str(tmp_path / "d"), "--bgr", str(good), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_16bit_and_float_images_are_read_by_their_real_range(tmp_path):
    """A 16-bit PNG used to load as all 1.0 (white) and a float TIFF in [0, 1] as black."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 65536, size=(288, 512), dtype=np.uint16)
    png16 = tmp_path / "g16.png"
    Image.fromarray(gray).save(png16)
    arr, note = inputs._read_array(png16, "src")
    assert arr.shape == (288, 512, 3) and "16-bit" in note
    assert np.allclose(arr[..., 0], gray / 65535.0, atol=1e-6)
    flt = tmp_path / "f.tiff"
    Image.fromarray((gray / 65535.0).astype(np.float32), mode="F").save(flt)
    arr_f, note_f = inputs._read_array(flt, "src")
    assert np.allclose(arr_f[..., 0], gray / 65535.0, atol=1e-6) and "float" in note_f
    out_of_range = tmp_path / "big.tiff"
    Image.fromarray((gray.astype(np.float32) * 4.0), mode="F").save(out_of_range)
    with pytest.raises(inputs.InputError, match=r"big.tiff.*mode F.*expected \[0, 1\]"):
        inputs._read_array(out_of_range, "src")
    pair = inputs.load_user_pair(str(png16), str(flt))
    assert "src: 16-bit" in pair.conversion and "bgr: float" in pair.conversion
    assert abs(float(pair.src.mean()) - float(gray.mean() / 65535.0)) < 1e-4
