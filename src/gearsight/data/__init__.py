"""Training input: from a source (folder, CSV, map file, CIFAR archive) to batches.

    decode -> resize -> pack (the packed uint8 format) -> loader (batches) + transforms (augmentation)
    sources (what files and labels a source holds), cifar and datasets (known public datasets),
    matting / composite / outdoor (background augmentation and the outdoor benchmark)

CNTK's formats live in gearsight.cntk; the modules that used to be here (ctf*, cntk_*, mapfile)
still import from their old paths with a DeprecationWarning for one release (README, "Moved modules").
"""
