"""CNTK compatibility, a format plug-in beside the core pipeline: what a CNTK user brings, read as is.

    ctf/          CNTK Text Format: reader (full grammar, compiled fast path), writer, the image view
    config.py     BrainScript reader configs -> plain records (the config language alone)
    transforms/   CNTK's ImageDeserializer transforms on torch tensors: Pipeline and the builders;
                  base, geometry (Crop, Scale, HFlip), photometric (Mean, Intensity, Color)
    mapfile.py    map files (``path<TAB>label``): the one map-file parser (pack and train), torch-free
    dataset.py    MapFileDataset: a map file decoded and transformed on the fly (CNTK's ImageDeserializer)

Imports go one way: transforms -> config; dataset -> mapfile, transforms; all of it -> gearsight.image
only. Nothing here imports gearsight.data or training code (data/sources.py uses mapfile to pack).
Moved from gearsight.data (data/ctf*.py, cntk_config.py, cntk_transforms.py, mapfile.py); the old
paths still import, with a DeprecationWarning, for one release (README, "Moved modules").
"""
