/* snnsim fused LIF kernels: one thread per neuron, all T steps in registers.
 * Expects a preamble (snnsim.kernels.kernel_source):
 *     typedef float|double real_t;   #define REAL_EXP expf|exp
 * Arrays are (T, M) C-contiguous: element [t, i] at t*M + i.
 * Compiles under NVRTC/NVCC (__CUDACC__ or __CUDACC_RTC__) as CUDA kernels, or under gcc with
 * -DSNNSIM_CPU_EMULATION as C functions taking the thread index as a trailing
 * argument i_emul, plus drivers lif_forward_all / lif_backward_all. */

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KERNEL extern "C" __global__
#define NEURON_INDEX_PARAM
#define NEURON_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#elif defined(SNNSIM_CPU_EMULATION)
#include <math.h>
#define KERNEL
#define NEURON_INDEX_PARAM , long long i_emul
#define NEURON_INDEX i_emul
#else
#error "compile with NVRTC/NVCC, or with -DSNNSIM_CPU_EMULATION for the CPU emulation"
#endif

#define RESTRICT __restrict__

/* Forward, docs/model.md, per neuron i, state starting at zero:
 *   du[t] = x[t] - theta_m u_reset[t-1];  u[t] = u_reset[t-1] + du[t]      (4)
 *   s[t]  = u[t] > v_th (strict)                                           (5)
 *   u_reset[t] = 0 (reset_zero) | u[t] - v_th (subtract) at a spike, else u[t]
 *   a[t]  = (1-theta_s) a[t-1] + theta_s s[t]                              (2) */
KERNEL void lif_forward_kernel(
    const real_t* RESTRICT x, real_t* RESTRICT u, real_t* RESTRICT du,
    unsigned char* RESTRICT s, real_t* RESTRICT a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero NEURON_INDEX_PARAM)
{
    const long long i = NEURON_INDEX;
    if (i >= M) return;
    real_t u_reset = (real_t)0;                         /* u_reset[-1] = 0 */
    real_t a_t = (real_t)0;                             /* a[-1] = 0 */
    for (int t = 0; t < T; ++t) {
        const long long k = (long long)t * M + i;
        const real_t du_t = x[k] - theta_m * u_reset;  /* (4) */
        const real_t u_t = u_reset + du_t;              /* (4) */
        const int s_t = u_t > v_th;                     /* (5), strict */
        if (s_t) {
            u_reset = reset_zero ? (real_t)0 : u_t - v_th;
        } else {
            u_reset = u_t;
        }
        a_t = decay_s * a_t + theta_s * (real_t)s_t;    /* (2) */
        u[k] = u_t;
        du[k] = du_t;
        s[k] = (unsigned char)s_t;
        a[k] = a_t;
    }
}

/* TSSL-BP backward, docs/authors_code.md, per neuron i, t = T-1..0, carry G[t+1]:
 *   S[t] = theta_s g[t] + (1-theta_s) S[t+1]                         (9), (12)
 *   leak = (1-theta_m) G[t+1]
 *   spike:  dt_du = -1/du[t] (clipped to +-bound if bound > 0)             (12)
 *           G[t] = -c S[t] dt_du + G[t+1] b R dt_du + through leak   (11), (13)
 *           R = u[t] (reset_zero) | v_th (subtract)
 *   silent: G[t] = leak
 *   delta[t] = G[t], or where warmup and a[t] < warm_threshold:           (S 2.3)
 *           sigma'(u[t]) S[t], sigma' = e^z / (w (1+e^z)^2),
 *           z = clip((v_th - u[t]) / w, +-zclip); the carry keeps G[t]. */
KERNEL void lif_backward_kernel(
    const real_t* RESTRICT g, const real_t* RESTRICT u, const real_t* RESTRICT du,
    const unsigned char* RESTRICT s, const real_t* RESTRICT a, real_t* RESTRICT delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip
    NEURON_INDEX_PARAM)
{
    const long long i = NEURON_INDEX;
    if (i >= M) return;
    real_t S = (real_t)0;                               /* S[T] = 0 */
    real_t carry = (real_t)0;                           /* G[T] = 0 */
    for (int t = T - 1; t >= 0; --t) {
        const long long k = (long long)t * M + i;
        S = theta_s * g[k] + decay_s * S;               /* (9), (12) */
        const real_t leak = decay_m * carry;            /* leak path of (4) */
        if (s[k]) {
            real_t dt_du = (real_t)(-1) / du[k];        /* (12) */
            if (bound > (real_t)0) {                    /* NaN passes, as np.clip */
                dt_du = dt_du < -bound ? -bound : (dt_du > bound ? bound : dt_du);
            }
            const real_t R = reset_zero ? u[k] : v_th;
            const real_t phi_1 = -c * S * dt_du;                /* (11) */
            const real_t phi_2 = carry * b * R * dt_du;         /* (13) */
            carry = phi_1 + phi_2 + through * leak;
        } else {
            carry = leak;
        }
        real_t out = carry;
        if (warmup && a[k] < warm_threshold) {          /* (S 2.3) */
            real_t z = (v_th - u[k]) / warm_width;
            z = z < -warm_zclip ? -warm_zclip : (z > warm_zclip ? warm_zclip : z);
            const real_t ez = REAL_EXP(z);
            const real_t one_plus = (real_t)1 + ez;
            out = ez / (warm_width * one_plus * one_plus) * S;
        }
        delta[k] = out;
    }
}

#if defined(SNNSIM_CPU_EMULATION)
/* CPU test drivers: "launch" one call per neuron. */
void lif_forward_all(
    const real_t* x, real_t* u, real_t* du, unsigned char* s, real_t* a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero)
{
    for (long long i = 0; i < M; ++i) {
        lif_forward_kernel(x, u, du, s, a, T, M, theta_m, theta_s, decay_s,
                           v_th, reset_zero, i);
    }
}

void lif_backward_all(
    const real_t* g, const real_t* u, const real_t* du, const unsigned char* s,
    const real_t* a, real_t* delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip)
{
    for (long long i = 0; i < M; ++i) {
        lif_backward_kernel(g, u, du, s, a, delta, T, M, decay_m, theta_s, decay_s,
                            v_th, c, b, through, reset_zero, bound, warmup,
                            warm_threshold, warm_width, warm_zclip, i);
    }
}
#endif
