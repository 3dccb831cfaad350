"""Everything that touches tensors: data, augmentation, networks, methods, losses,
evaluation, the generic training loop and the Ray Tune trainable."""
