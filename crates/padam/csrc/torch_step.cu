// PAdam's whole step, Adam and pWD's finish, in one pass over the LibTorch backend's flat
// buffers of one group (the tensors of a step that share their constants). Compiled at run
// time by NVRTC (crates/padam/src/fused/torch_cuda.rs), so building padam needs no CUDA
// toolkit. The arithmetic is the CubeCL kernel's (src/fused/cuda.rs, `adam_pwd_element`),
// operation for operation, with the constants of `StepScalars`; compiled with --fmad=false so
// that each product and sum is rounded on its own, as the tensor ops round them.
//
// `flags` is null when the step checks nothing; otherwise a NaN or inf in g sets
// flags[flag_index[k]] = 1 for the tensor k whose segment [seg_ends[k-1], seg_ends[k]) holds
// it (found only then, by bisection over the group's `segments` ends).
extern "C" __global__ void padam_adam_pwd(
    float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
    float* __restrict__ v, long long n,
    float beta_1, float one_minus_beta_1, float beta_2, float one_minus_beta_2,
    float combined, float eps_scaled, float lr,
    int mode, float uniform_factor, float c, float p_minus_2, float base,
    float* flags, const long long* __restrict__ seg_ends,
    const long long* __restrict__ flag_index, int segments)
{
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gi = g[i];
        if (flags != 0 && (__float_as_uint(gi) & 0x7f800000u) == 0x7f800000u) {
            int lo = 0, hi = segments - 1;
            while (lo < hi) {
                const int mid = (lo + hi) / 2;
                if (seg_ends[mid] > i) hi = mid; else lo = mid + 1;
            }
            flags[flag_index[lo]] = 1.0f;
        }
        const float m_new = m[i] * beta_1 + gi * one_minus_beta_1;
        const float v_new = v[i] * beta_2 + (gi * gi) * one_minus_beta_2;
        const float update = (m_new * combined) / (sqrtf(v_new) + eps_scaled);
        const float w_old = w[i];
        const float w_hat = w_old - update * lr;
        float w_new = w_hat;
        if (mode == 1) {
            w_new = w_hat * uniform_factor;
        } else if (mode == 2) {
            // |0|^(p-2) = +inf for p < 2: the weight stays exactly 0.
            w_new = w_hat / (powf(fabsf(w_old), p_minus_2) * c + base);
        }
        w[i] = w_new;
        m[i] = m_new;
        v[i] = v_new;
    }
}
