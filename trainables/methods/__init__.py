"""The method catalogue: one file per method, registered here by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trainables.methods.aet import AET
from trainables.methods.base import SSLMethod
from trainables.methods.context_encoder import ContextEncoder
from trainables.methods.cpc import CPC
from trainables.methods.denoising_ae import DenoisingAutoencoder
from trainables.methods.dim import DeepInfoMax
from trainables.methods.jigsaw import Jigsaw
from trainables.methods.moco import MoCo
from trainables.methods.patch_triplet import PatchTriplet
from trainables.methods.relative_patch import RelativePatchLocation
from trainables.methods.rotnet import RotNet
from trainables.methods.simclr import SimCLR
from trainables.methods.spatial_contrasting import SpatialContrasting

#: Contrastive methods first, then the pretext tasks.
METHODS: Mapping[str, type[SSLMethod]] = MappingProxyType({
    cls.name: cls
    for cls in (
        SimCLR, MoCo, CPC, SpatialContrasting, PatchTriplet, DeepInfoMax,
        RotNet, RelativePatchLocation, Jigsaw, DenoisingAutoencoder, ContextEncoder, AET,
    )
})


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r}; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]
