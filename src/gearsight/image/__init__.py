"""Images in, pixels out: torch-free, shared by packing, prediction and the scoring service.

    decode.py   any supported file or bytes -> H x W x 3 uint8 RGB (EXIF rotation, transparency on
                white, CMYK and 16-bit converted, a pixel limit against decompression bombs)
    resize.py   fit_square: pad, crop or stretch to the model's square input (the pack's geometry)

Imports numpy and Pillow only (tests/test_serve.py checks the serving process never loads torch).
Moved from gearsight.data (data/decode.py, data/resize.py); the old paths still import, with a
DeprecationWarning, for one release (README, "Moved modules").
"""
