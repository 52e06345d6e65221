"""Reading images: ImageSource and its backends (tifffile, OpenSlide, DICOM, CZI, slideio), formats."""
