// Every operator of the fused_optim namespace with its C++ signature, for code that treats them all alike (the
// Autograd and Sparse kernels in ops.cpp, the eager Python bindings in python_module.cpp).
#pragma once

#include "adagrad_args.h"
#include "adam_args.h"
#include "lamb_args.h"
#include "lion_args.h"
#include "norm_args.h"
#include "rmsprop_args.h"
#include "sgd_args.h"

// X(name, signature) for each operator.
#define FUSED_OPTIM_FOR_EACH_OP(X)               \
  X(adam_, fused_optim::AdamSignature)           \
  X(sgd_, fused_optim::SgdSignature)             \
  X(rmsprop_, fused_optim::RmspropSignature)     \
  X(adagrad_, fused_optim::AdagradSignature)     \
  X(lion_, fused_optim::LionSignature)           \
  X(lamb_norms, fused_optim::LambNormsSignature) \
  X(lamb_, fused_optim::LambSignature)           \
  X(grad_norm, fused_optim::GradNormSignature)
