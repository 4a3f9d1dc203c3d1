"""Clips, keyframes and shards. The clip grid every part shares is defined once, here."""

FPS = 24  # every sample is stored, trained and generated at 24 fps: the UNet's frame_idx grid
NUM_FRAMES = 48  # 2 s at 24 fps
