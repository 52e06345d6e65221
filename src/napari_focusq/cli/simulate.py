"""``focusq simulate``: an in-focus image defocused by the optical model (thin or layered)."""
from __future__ import annotations

from napari_focusq.cli.parser import EXIT_OK, UsageError, _bar


def _read_image_plane(path, pixel_size_um, *, max_side: int):
    """(plane, pixel size, stem) of IMAGE: level 0, the middle plane of a stack."""
    from napari_focusq.export.outputs import unique_stem
    from napari_focusq.io.formats import open_image

    with open_image(path, pixel_size_um=pixel_size_um) as src:
        yx = (src.shape[src.axes.index("Y")], src.shape[src.axes.index("X")])
        if max(yx) > max_side:
            raise ValueError(f"{path}: image is {yx[0]}x{yx[1]} px; simulate works on planes up to "
                             f"{max_side}x{max_side}: crop a region first (e.g. in napari or QuPath)")
        px = src.pixel_size_um
        if px is None:
            raise UsageError(f"{path}: pixel size unknown (not in the file's metadata); "
                             "pass it with --pixel-size UM")
        plane = src.read_plane(z=src.n_z // 2 if "Z" in src.axes else None)
    return plane, px, unique_stem(path, set())


def _simulate_layers(args, plane, px):
    """--layers -> Layer objects of IMAGE's shape: another image (same pixel size; centre crop,
    mirrored where smaller), or IMAGE's own content from another region (rolled half-way
    and turned), so a layer is other tissue of the same specimen."""
    import numpy as np

    from napari_focusq.demo import MAX_SIMULATE_SIDE
    from napari_focusq.optics.layered import Layer

    layers = []
    for k, (depth, weight, path) in enumerate(args.layers):
        if path is None:
            img = np.roll(plane, (plane.shape[0] * (k + 1) // (len(args.layers) + 1),
                                  plane.shape[1] * (k + 1) // (len(args.layers) + 1)), axis=(0, 1))
            img = img[::-1, ::-1] if k % 2 == 0 else img[:, ::-1]  # turned or mirrored: keeps the shape
        else:
            img, opx, _ = _read_image_plane(path, args.pixel_size, max_side=MAX_SIMULATE_SIDE)
            if abs(opx - px) > 0.01 * px:
                raise UsageError(f"{path}: layer images must share IMAGE's pixel size ({px:g} µm); "
                                 f"this one is {opx:g} µm")
            if img.ndim != plane.ndim or img.shape[2:] != plane.shape[2:] or img.dtype != plane.dtype:
                raise UsageError(f"{path}: layer images must have IMAGE's channels and dtype "
                                 f"({plane.shape[2:]} {plane.dtype}); got {img.shape[2:]} {img.dtype}")
            pad = [(0, max(0, plane.shape[i] - img.shape[i])) for i in (0, 1)] + [(0, 0)] * (img.ndim - 2)
            img = np.pad(img, pad, mode="symmetric")
            y0, x0 = (img.shape[0] - plane.shape[0]) // 2, (img.shape[1] - plane.shape[1]) // 2
            img = img[y0:y0 + plane.shape[0], x0:x0 + plane.shape[1]]
        layers.append(Layer(np.ascontiguousarray(img), depth, weight))
    return layers


def cmd_simulate(args) -> int:
    from napari_focusq.config import Optics
    from napari_focusq.demo import MAX_SIMULATE_SIDE, _modality, check_simulate_budget, write_defocus_series

    plane, px, stem = _read_image_plane(args.image, args.pixel_size, max_side=MAX_SIMULATE_SIDE)
    mod = _modality(plane, args.modality)
    optics = None
    if args.na is not None or args.n is not None:
        import dataclasses

        base = Optics.for_modality(mod)
        try:
            optics = dataclasses.replace(base, **{k: v for k, v in (("na", args.na), ("n", args.n)) if v is not None})
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    check_simulate_budget(plane, args.z_um, px, mod, optics, args.method, name=args.image, layers=args.layers or ())
    layers = _simulate_layers(args, plane, px) if args.layers else None
    paths = write_defocus_series(plane, args.z_um, args.out, stem, pixel_size_um=px, modality=mod,
                                 optics=optics, method=args.method, progress=_bar(), layers=layers)
    print(f"wrote {len(paths)} images ({mod}, {px:g} µm/px, {plane.dtype}) to {args.out}/:")
    for p in paths:
        print(f"  {p.name} (+ {p.with_suffix('.png').name})")
    return EXIT_OK
