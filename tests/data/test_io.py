import struct

import numpy as np
import pytest

from keyvid.data.io import read_av, upright, write_av

IDENTITY = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
QUARTER = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)  # what phones write for portrait


def test_a_clip_with_a_display_matrix_is_read_upright(tmp_path):
    """A phone's portrait clip is stored landscape with a 90-degree display matrix in the mp4's track
    header; players and ffmpeg show it turned. The reader must give the frames as shown."""
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    frames[:, :8, :, 0] = 255  # a red band along the stored top
    path = write_av(tmp_path / "stored.mp4", frames, 24.0)
    data = bytearray(path.read_bytes())
    at = data.find(IDENTITY, data.find(b"tkhd"))
    assert at > 0
    data[at:at + 36] = QUARTER
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(bytes(data))
    clip = read_av(rotated)
    assert clip.frames.shape == (6, 48, 32, 3)  # portrait, as displayed
    red = clip.frames[0, :, :, 0] > 128
    assert red[:, -8:].all() and not red[:, :20].any()  # the stored top is on the right: turned clockwise
    assert read_av(path).frames.shape == (6, 32, 48, 3)  # no matrix: as stored


@pytest.mark.parametrize("rotation,corner", [(0, (0, 0)), (90, (2, 0)), (-90, (0, 1)), (180, (1, 2)), (270, (0, 1))])
def test_upright_turns_by_the_display_angle(rotation, corner):
    a = np.zeros((2, 3, 1), np.uint8)
    a[0, 0] = 1  # the stored top-left pixel
    out = upright(a, rotation)
    assert out.shape[:2] == ((2, 3) if rotation % 180 == 0 else (3, 2))
    assert out[corner][0] == 1 and out.sum() == 1
