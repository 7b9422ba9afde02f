"""CNTK compatibility, a format plug-in beside the core pipeline: what a CNTK user brings, read as is.

    ctf/          CNTK Text Format: reader (full grammar, compiled fast path), writer, the image view
    config.py     BrainScript reader configs -> plain records (the config language alone)
    transforms.py CNTK's ImageDeserializer transforms (Crop, Scale, Mean, Color, ...) on torch tensors
    mapfile.py    map files (``path<TAB>label``): the one map-file parser, and MapFileDataset

Imports go one way: transforms -> config; mapfile -> transforms. Nothing here imports training code.
Moved from gearsight.data (data/ctf*.py, cntk_config.py, cntk_transforms.py, mapfile.py); the old
paths still import, with a DeprecationWarning, for one release (README, "Moved modules").
"""
