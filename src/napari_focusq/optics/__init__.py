"""Optics: the PSF, thin and layered defocus, deblur, pair fits, user optics."""
