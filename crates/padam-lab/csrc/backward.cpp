// PyTorch's autograd engine run from given output gradients, for models::ops::torch's islands
// (tch's `run_backward` seeds every root with ones, so an island had to differentiate
// `sum(output * grad)`: three extra kernels over its output per layer and step).
// Built by build.rs with the `tch` feature, against the libtorch that torch-sys links.
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/edge.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

extern "C" {

// The gradients of `outputs[0..n]` (seeded with `grads[0..n]`) with respect to
// `inputs[0..n_inputs]`, written to `results` as new tensors (freed by the caller as tch
// tensors). Returns null, or a message (free it with padam_free_message) when PyTorch threw.
char *padam_backward(at::Tensor **outputs, at::Tensor **grads, int n, at::Tensor **inputs,
                     int n_inputs, at::Tensor **results) {
  try {
    std::vector<torch::autograd::Edge> roots;
    std::vector<torch::autograd::Variable> seeds;
    for (int i = 0; i < n; ++i) {
      roots.push_back(torch::autograd::impl::gradient_edge(*outputs[i]));
      seeds.push_back(*grads[i]);
    }
    std::vector<torch::autograd::Edge> wanted;
    for (int i = 0; i < n_inputs; ++i) {
      if (!inputs[i]->requires_grad()) {
        return strdup("an input of the backward does not require a gradient");
      }
      wanted.push_back(torch::autograd::impl::gradient_edge(*inputs[i]));
    }
    auto out = torch::autograd::Engine::get_default_engine().execute(
        roots, seeds, /*keep_graph=*/false, /*create_graph=*/false,
        /*accumulate_grad=*/false, wanted);
    for (int i = 0; i < n_inputs; ++i) {
      results[i] = new at::Tensor(out[i]);
    }
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

void padam_free_message(char *message) { std::free(message); }

}  // extern "C"
