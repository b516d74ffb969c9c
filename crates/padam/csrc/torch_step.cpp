// PyTorch's multi-tensor operations that tch does not expose, for the LibTorch step
// (src/fused/torch.rs): fused Adam (`at::_fused_adam_`: one multi-tensor kernel on CUDA, one
// vectorised loop on the CPU) for its Adam half, and per-segment sums (`at::_foreach_norm`) for
// its non-finite check. Built by build.rs with the `tch` feature, against the libtorch that
// torch-sys links.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/stack.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

extern "C" {

// Adam without weight decay on `param`, in place, with its moments `exp_avg` and `exp_avg_sq`
// (updated in place) and `step` (a one-element float tensor on the parameter's device holding
// the step number, 1 for the first; read, not changed). Returns null, or a message (free it
// with padam_step_free_message) when PyTorch threw.
char *padam_fused_adam(at::Tensor *param, at::Tensor *grad, at::Tensor *exp_avg,
                       at::Tensor *exp_avg_sq, at::Tensor *step, double lr, double beta1,
                       double beta2, double eps) {
  try {
    at::_fused_adam_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {*step}, lr, beta1, beta2,
                     /*weight_decay=*/0.0, eps, /*amsgrad=*/false, /*maximize=*/false);
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

// The sum of |x| over each of the `n` consecutive segments of the 1-D `flat` (lengths `lens`),
// as a new 1-D tensor of `n` values in `*out` (delete with tch's at_free): one multi-tensor
// reduction on CUDA, where PyTorch's `segment_reduce` sums each segment in one GPU thread. With
// the segments of `g * 0` (0 where finite, NaN where not) the sums mark the non-finite ones, and
// cannot overflow. Returns null, or a message as above.
char *padam_segment_abs_sums(at::Tensor *flat, const int64_t *lens, int64_t n, at::Tensor **out) {
  try {
    std::vector<at::Tensor> parts;
    parts.reserve(n);
    int64_t offset = 0;
    for (int64_t k = 0; k < n; ++k) {
      parts.push_back(flat->narrow(0, offset, lens[k]));
      offset += lens[k];
    }
    *out = new at::Tensor(at::stack(at::_foreach_norm(parts, 1)));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

void padam_step_free_message(char *message) { std::free(message); }

}  // extern "C"
