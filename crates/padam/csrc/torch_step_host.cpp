// torch_step.cu compiled for the host, so that the tests can run the LibTorch step's CUDA
// kernel without a GPU (src/fused/torch_cuda.rs): one block of one thread, whose grid-stride
// loop then visits every element in order. The tests call it with the same `Args` struct that
// the launch passes, so the two layouts of the parameter are checked too. Built with -ffp-contract=off, as NVRTC builds the
// kernel with --fmad=false. What it cannot test is the launch itself (the stream, the context).
#include <math.h>
#include <string.h>

#define __global__
#define __restrict__
namespace {
struct Dim { unsigned x; };
const Dim blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, sizeof u);
    return u;
}
}

#include "torch_step.cu"
