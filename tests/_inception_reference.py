"""torch-fidelity's FID Inception evaluated in float64: the reference our float32 Inception is compared with."""

from __future__ import annotations

import torch

# Float32 round-off accumulates over the network's longest reductions (3 x 3 x 448 taps in Mixed_7) and
# compounds through its 94 convolution + batch-norm layers.
INCEPTION_TERMS = 3 * 3 * 448 * 94


def torch_fidelity_float64(path, features):
    """torch-fidelity's extractor computing in float64 (its outputs are then rounded to float32: half an ulp).

    Its ``feature_extractor_internal_dtype="float64"`` option maps to float32 (torch-fidelity 0.4), so the
    module and its documented internal dtype attribute are set to float64 after construction.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", features, feature_extractor_weights_path=str(path)
    )
    extractor.feature_extractor_internal_dtype = torch.float64
    return extractor.double()
