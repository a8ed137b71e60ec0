#pragma once
// Tori of any number of dimensions (TPU v3: 2D, TPU v4: 3D), chip-to-chip links only.
#include <vector>

#include "fabric.h"

namespace glam {

// Chip id = x0 + d0*(x1 + d1*(x2 + ...)). Each chip links to both neighbours in every dimension
// (wrap-around included); a dimension of 2 has one cable per pair, a dimension of 1 none.
FabricBuild build_torus(const std::vector<int>& dims, const LinkSpec& ici);

std::vector<int> torus_coords_of(const std::vector<int>& dims, int chip);

}  // namespace glam
