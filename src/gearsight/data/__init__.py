"""Training input: from a source (folder, CSV, map file, CIFAR archive) to batches.

    inputs (what kind of input a path is: the one place that decides, for pack, train and detect)
    -> sources (what files and labels a source holds) -> pack (decode + resize through gearsight.image,
    the packed uint8 format: PackWriter its one writer, PackedDataset its one reader)
    -> loader (batches) + transforms (augmentation)
    cifar (CIFAR-10 in every shape, packed through pack) and datasets (known public datasets), paths,
    matting / composite / outdoor (background augmentation and the outdoor benchmark)

Decoding and resizing live in gearsight.image (torch-free), CNTK's formats in gearsight.cntk; the
modules that used to be here (decode, resize, ctf*, cntk_*, mapfile) still import from their old
paths with a DeprecationWarning for one release (README, "Moved modules").
"""
