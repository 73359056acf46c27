"""Small pure image operations used by the restoration stages.

- `io`: decode/encode (EXIF orientation, ICC/EXIF passthrough, 16-bit, grey/palette/CMYK/RGBA, pixel limit)
- `geometry`: the official resizing rules (ARCHITECTURE §6.3, §8), padding, tiling with overlap and seam blending
- `faces`: 5-point landmarks, template, similarity alignment, histogram matching, warp-back and blending (§9)
- `review`: the before/after review sheet
"""
