#pragma once
/// @file
/// Umbrella header: everything in lola that compiles with the host compiler alone.

#include "lola/version.hpp"

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/random.hpp"
#include "lola/core/scalar.hpp"
#include "lola/core/shape.hpp"

#include "lola/expr/expr_base.hpp"
#include "lola/expr/group_action.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/product.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/expr/transposed.hpp"

#include "lola/backend/eigen/dense.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/merge.hpp"
#include "lola/backend/eigen/reductions.hpp"
