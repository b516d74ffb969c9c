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

// The kernel's one parameter, passed by value: the Rust side (`Args` in torch_cuda.rs) has the
// same #[repr(C)] layout, and the host build of this file (torch_step_host.cpp) is called with
// that same struct in the tests, so a mismatch of the two layouts fails them.
struct PadamArgs {
    float* w;
    const float* g;
    float* m;
    float* v;
    long long n;
    float beta_1, one_minus_beta_1, beta_2, one_minus_beta_2;
    float combined, eps_scaled, lr;
    int mode;
    float uniform_factor, c, p_minus_2, base;
    float* flags;
    const long long* seg_ends;
    const long long* flag_index;
    int segments;
};

extern "C" __global__ void padam_adam_pwd(const PadamArgs a)
{
    float* __restrict__ w = a.w;
    const float* __restrict__ g = a.g;
    float* __restrict__ m = a.m;
    float* __restrict__ v = a.v;
    const long long n = a.n;
    const float beta_1 = a.beta_1, one_minus_beta_1 = a.one_minus_beta_1;
    const float beta_2 = a.beta_2, one_minus_beta_2 = a.one_minus_beta_2;
    const float combined = a.combined, eps_scaled = a.eps_scaled, lr = a.lr;
    const int mode = a.mode;
    const float uniform_factor = a.uniform_factor, c = a.c, p_minus_2 = a.p_minus_2, base = a.base;
    float* flags = a.flags;
    const long long* __restrict__ seg_ends = a.seg_ends;
    const long long* __restrict__ flag_index = a.flag_index;
    const int segments = a.segments;

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
