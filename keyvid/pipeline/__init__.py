"""Inference: image + audio (+ text) -> keyframes -> 48-frame, 24 fps video (paper Sections 3.1-3.3).

    pipe = KeyVIDPipeline.from_pretrained("weights/keyvid")        # or tiny_pipeline(seed) for tests
    out = pipe(image, wave, sr, "a lion roaring", seed=0)          # out.frames "b 48 H W 3" uint8
    out = pipe(image, wave, sr, options=SamplingOptions(steps=30))  # or pipe(..., steps=30)

One module per job: ``inputs`` (image and audio in, frames out), ``localisation`` (stage 1: which
frames are keyframes), ``stages`` (stages 2 and 3 on a ``keyvid.diffusion.denoiser.KeyVIDDenoiser``),
``options`` (``SamplingOptions``, the sampling settings of both stages), ``files`` (the saved layout),
``core`` (``KeyVIDPipeline``: components, checks, the public calls), ``tiny`` (a random tiny pipeline).

Stages, as upstream KeyVID's ``scripts/generation.sh`` runs them (but in one process and batched):

1. **Localizer**: log-mel -> motion score per frame (48) -> peaks/valleys -> 12 keyframe indices
   (Algorithm 1, paper mode, seeded). ``keyframes="uniform"`` is the paper's ablation (0, 4, ..., 44);
   explicit indices are accepted too (upstream reads precomputed ones from disk).
2. **Keyframe generator**: 12 frames at the keyframe indices from the input image's latent repeated
   as the concat condition, the image tokens and audio tokens of those frames, the frame indices, and
   ``fs`` = ``keyframe_fs`` of the indices (what our data loader trains with; for uniform keyframes it
   is 6, the constant upstream's script passes). DDIM 90, Eq. 4 guidance (s_img 2, s_txt 7.5, s_aud
   7.5), guidance rescale 0.7, eta 1 (upstream's ``--ddim_eta 1.0``).
3. **Interpolator** (Fig. 6b): the generated keyframe latents at their indices in a zero concat
   condition, image and audio tokens for all 48 frames, fs 24, no frame-index embedding; FreeNoise
   (window 12, stride 6, ``keyvid.diffusion.freenoise``); s_aud 9.0 as upstream's script (the paper
   says 7.5).
4. **VAE decode** per frame chunk.

Null conditions (the guidance branches) are upstream's: the CLIP text embedding of "", the projector
applied to CLIP of an all-zero image (mid-grey in [-1, 1]), ImageBind of an all-zero mel.

The two diffusion stages also run apart (``generate_keyframes``, then ``interpolate`` with its
``KeyframeOutput``, in another process if need be: ``launch/generate.py stage=keyframes|interpolate``),
with the same result as one call: the output carries each sample's generator state. A pipeline may
hold only one stage's UNet (``stages``) and no localizer, for a run that trains and samples the
stages in separate jobs; what a call needs and lacks fails with the component's name.

Randomness: each sample has its own CPU ``torch.Generator`` seeded with its seed (one int for all
samples, as upstream re-seeds every clip, or one per sample), used for the VAE posterior sample, the
initial noise, the noise shuffle and every DDIM step, and the same seed drives keyframe selection. A
sample's output therefore does not depend on what else is in the batch.
"""

from keyvid.pipeline.core import KeyVIDPipeline
from keyvid.pipeline.files import COMPONENT_FILES, PIPELINE_FILE
from keyvid.pipeline.inputs import load_image, prepare_image, to_uint8
from keyvid.pipeline.localisation import KeyframeChoice
from keyvid.pipeline.options import ANCHOR_MODES, AnchorMode, SamplingOptions
from keyvid.pipeline.stages import INTERPOLATOR_FS, KeyframeOutput, KeyVIDOutput
from keyvid.pipeline.tiny import tiny_pipeline

__all__ = [
    "ANCHOR_MODES", "COMPONENT_FILES", "INTERPOLATOR_FS", "PIPELINE_FILE", "AnchorMode", "KeyframeChoice",
    "KeyframeOutput", "KeyVIDOutput", "KeyVIDPipeline", "SamplingOptions", "load_image", "prepare_image",
    "tiny_pipeline", "to_uint8",
]
