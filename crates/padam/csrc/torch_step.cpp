// PyTorch's fused Adam (`at::_fused_adam_`: one multi-tensor kernel on CUDA, one vectorised loop
// on the CPU), which tch does not expose, for the Adam half of the LibTorch step
// (src/fused/torch.rs). Built by build.rs with the `tch` feature, against the libtorch that
// torch-sys links.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adam.h>

#include <cstdlib>
#include <cstring>
#include <exception>

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

void padam_step_free_message(char *message) { std::free(message); }

}  // extern "C"
