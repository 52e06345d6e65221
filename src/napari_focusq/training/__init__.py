"""Training: config and presets, recipes, data, augmentation, fit, evaluate."""
