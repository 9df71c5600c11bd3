/* Fused LIF forward and backward for the CPU: one pass over time forward, one reverse pass backward.
 *
 * The neuron and both recurrences are specified and derived once, in snn/lif/spec.py; this file
 * implements them for fp32, bf16 and fp16 storage. It includes no torch header (a plain C build,
 * no torch extension) and is built at first use by kernels/lif/cpu_build.py; kernels/lif/cpu_launch.py
 * and kernels/lif/cpu_pool.py call it through ctypes.
 *
 * Layout: every tensor is seen as [B, T, N] (N = the neuron dims flattened) with element strides,
 * so a time-major [T, B, N] buffer, a stride-0 time dimension (the same input at every step) and
 * other strided views are read in place. Work is split into tiles of one batch row x TILE
 * neurons; each tile runs the whole time loop with its potential v (forward) or carry (backward)
 * in a small buffer, so x, s, h, the upstream gradient and grad_x are each touched once.
 *
 * Rounding: each operation is evaluated as PyTorch evaluates it on the CPU: in fp32, with the result
 * rounded to the storage dtype (round to nearest even) after every op for bf16/fp16 (R() below),
 * in the grouping of snn/lif/spec.py. Built with -ffp-contract=off: a fused multiply-add would
 * round v*tau + x once instead of twice and could flip a spike at the threshold. So spikes equal
 * the reference's in every dtype and fp32 input gradients equal reference autograd's bit for bit
 * for the triangle surrogate (sigmoid/atan call expf, whose last bit may differ from torch's).
 *
 * Per-neuron parameters arrive as a [PARAM_ROWS, n_param] fp32 array (n_param = N, or 1 with
 * stride 0 for numbers), one row per use, because PyTorch rounds a Python number and a tensor
 * differently in 16-bit arithmetic (a product uses the number in fp32, a sum or comparison rounds
 * it to the dtype first); kernels/lif/cpu_launch.py fills the rows.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#ifndef TILE
/* Neurons per tile. Each step of a tile reads and writes TILE contiguous elements per tensor; 1024
 * was 15-20 % faster than 512 at the large shape (T=16, N=65536; longer runs for the prefetcher)
 * and equal at N=512; the backward's per-thread buffer of h (T x TILE fp32) stays in L2. */
#define TILE 1024
#endif
int lif_tile(void) { return TILE; }

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };
enum { SG_TRIANGLE = 0, SG_SIGMOID = 1, SG_ATAN = 2, SG_RECTANGLE = 3, SG_FAST_SIGMOID = 4, N_SG };
/* reset codes of the backward (the forward's mode adds 1 for a hard reset to v_reset) */
enum { RS_HARD = 0, RS_SOFT = 1, RS_NEXT = 2 };
/* rows of the parameter array */
enum { P_TAU_MUL = 0, P_TAU32, P_TH_CMP, P_TH_MUL, P_TH32, PARAM_ROWS };

typedef struct {
    float a_add;  /* triangle: alpha rounded to the dtype (alpha - |z|) */
    float a_mul;  /* alpha in fp32 (products) */
    float c1;     /* triangle: 1/alpha/alpha; atan: pi/2*alpha; rectangle: 0.5/alpha rounded to the dtype */
    float c2;     /* atan: alpha/2 */
} SurrogateConsts;

/* ---- storage dtypes ---------------------------------------------------------------------- */

INLINE float bf16_to_f32(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
INLINE uint16_t f32_to_bf16(float f) {  /* c10::BFloat16's round_to_nearest_even */
    uint32_t u; memcpy(&u, &f, 4);
    uint16_t r = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return f != f ? (uint16_t)0x7FC0 : r;
}
INLINE float LD(const int dt, const void *p, ptrdiff_t i) {
    if (dt == DT_F32) return ((const float *)p)[i];
    if (dt == DT_BF16) return bf16_to_f32(((const uint16_t *)p)[i]);
    return (float)((const _Float16 *)p)[i];
}
INLINE void ST(const int dt, void *p, ptrdiff_t i, float v) {
    if (dt == DT_F32) ((float *)p)[i] = v;
    else if (dt == DT_BF16) ((uint16_t *)p)[i] = f32_to_bf16(v);
    else ((_Float16 *)p)[i] = (_Float16)v;
}
/* R: round an fp32 result to the storage dtype (identity for fp32) */
INLINE float R(const int dt, float v) {
    if (dt == DT_F32) return v;
    if (dt == DT_BF16) { /* f32_to_bf16 then back, without leaving 32-bit lanes (no pack/unpack when vectorised) */
        uint32_t u; memcpy(&u, &v, 4);
        u = v != v ? 0x7FC00000u : (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
        float r; memcpy(&r, &u, 4);
        return r;
    }
    return (float)(_Float16)v;
}

/* ---- surrogates: snn.neuron.surrogate_gradient, op for op ---------------------------------- */

INLINE float surrogate(const int dt, const int sg, float z, const SurrogateConsts *k) {
    if (sg == SG_TRIANGLE) {
        float t = R(dt, k->a_add - fabsf(z));
        t = t < 0.0f ? 0.0f : t; /* clamp(min=0), NaN kept */
        return R(dt, t * k->c1);
    }
    if (sg == SG_SIGMOID) {
        float u = R(dt, z * k->a_mul);
        float sig = R(dt, 1.0f / (1.0f + expf(-u)));
        return R(dt, R(dt, R(dt, 1.0f - sig) * sig) * k->a_mul);
    }
    if (sg == SG_ATAN) { /* (alpha/2) / (1 + q*q) is evaluated by torch as reciprocal(1 + q*q) * (alpha/2) */
        float q = R(dt, z * k->c1);
        float d = R(dt, 1.0f + R(dt, q * q));
        return R(dt, R(dt, 1.0f / d) * k->c2);
    }
    if (sg == SG_FAST_SIGMOID) { /* 1 / (|z| * alpha + 1)**2: torch's 1.0 / t is reciprocal(t) * 1 */
        float d = R(dt, R(dt, fabsf(z) * k->a_mul) + 1.0f);
        return R(dt, 1.0f / R(dt, d * d));
    }
    return fabsf(z) < k->c1 ? R(dt, k->a_mul) : 0.0f;
}

static int threads_for(int64_t work, int nthreads) { return work < 32768 ? 1 : nthreads; }

static void fill_params(float (*p)[TILE], const float *params, int64_t n_param, int64_t n0, int64_t w) {
    for (int r = 0; r < PARAM_ROWS; r++)
        for (int64_t j = 0; j < w; j++) p[r][j] = params[r * n_param + (n_param == 1 ? 0 : n0 + j)];
}

/* ---- forward ------------------------------------------------------------------------------ */

/* mode: 0 hard reset to 0, 1 hard reset to v_reset, 2 soft reset, 3 subtract_next (v = h; the next
 * step subtracts thresh where v > thresh) */
INLINE void fwd_tile(const int dt, const int contig, const int mode, const int pn, int64_t T, int64_t w,
                     const char *x, int64_t xst, int64_t xsn, char *s, char *h, int64_t ost, int64_t osn,
                     float *v, const float *tau, const float *th, float vr) {
    const int64_t esz = dt == DT_F32 ? 4 : 2;
    if (contig) { xsn = 1; osn = 1; }
    for (int64_t t = 0; t < T; t++) {
        const void *xt = x + t * xst * esz;
        void *st = s + t * ost * esz;
        void *ht = h ? h + t * ost * esz : NULL;
        if (ht) {
            for (int64_t j = 0; j < w; j++) {
                const float tj = tau[pn ? j : 0], thj = th[pn ? j : 0];
                float hv = R(dt, R(dt, v[j] * tj) + LD(dt, xt, j * xsn));
                if (mode == 3) hv = R(dt, hv - (v[j] > thj ? thj : 0.0f));
                float sv = hv > thj ? 1.0f : 0.0f; /* R(h - thresh) > 0 exactly when h > thresh */
                ST(dt, st, j * osn, sv);
                ST(dt, ht, j * osn, hv);
                float nv = mode == 3 ? hv : mode == 2 ? R(dt, hv - sv * thj) : hv * (1.0f - sv);
                v[j] = mode == 1 ? R(dt, nv + sv * vr) : nv;
            }
        } else {
            for (int64_t j = 0; j < w; j++) {
                const float tj = tau[pn ? j : 0], thj = th[pn ? j : 0];
                float hv = R(dt, R(dt, v[j] * tj) + LD(dt, xt, j * xsn));
                if (mode == 3) hv = R(dt, hv - (v[j] > thj ? thj : 0.0f));
                float sv = hv > thj ? 1.0f : 0.0f;
                ST(dt, st, j * osn, sv);
                float nv = mode == 3 ? hv : mode == 2 ? R(dt, hv - sv * thj) : hv * (1.0f - sv);
                v[j] = mode == 1 ? R(dt, nv + sv * vr) : nv;
            }
        }
    }
}

typedef struct {
    int64_t B, T, N;
    const char *x; int64_t xsb, xst, xsn;     /* input */
    char *s, *h; int64_t osb, ost, osn;       /* spikes, pre-reset potentials (h may be NULL) */
    const float *params; int64_t n_param;     /* [PARAM_ROWS, n_param] */
    const char *v0; int64_t v0sb, v0sn;       /* initial potential in the dtype, or NULL */
    char *vT;                                 /* final potential [B, N] contiguous, or NULL */
    float v_reset;                            /* rounded to the dtype */
    uint8_t *bits; int64_t bsb, bst;          /* optional bit-packed spikes [B, T, ceil(N/8)] (byte strides), or NULL */
} FwdArgs;

/* The tile's spikes, just written, packed 8 neurons to a byte (neuron n0+j -> byte (n0+j)/8, bit j%8;
 * n0 is a multiple of TILE, so a tile owns whole bytes): snn/memory.py saves these for the backward. */
INLINE void pack_tile(const int dt, int64_t T, int64_t w, const char *s, int64_t ost, int64_t osn,
                      uint8_t *bits, int64_t bst) {
    const int64_t esz = dt == DT_F32 ? 4 : 2;
    for (int64_t t = 0; t < T; t++) {
        const void *st = s + t * ost * esz;
        uint8_t *bt = bits + t * bst;
        for (int64_t k = 0; k < (w + 7) / 8; k++) {
            unsigned byte = 0;
            for (int64_t i = 0; i < 8 && 8 * k + i < w; i++) byte |= (unsigned)(LD(dt, st, (8 * k + i) * osn) != 0.0f) << i;
            bt[k] = (uint8_t)byte;
        }
    }
}

/* One tile (batch row b, neurons n0 .. n0+TILE) over all steps. Specialised per (dtype, contig,
 * mode, per-neuron parameters) below: the OpenMP region calls a specialised function per tile (constants do not reach
 * code that GCC outlines for a parallel region, so the region itself must stay generic). */
INLINE void fwd_one_tile(const int dt, const int contig, const int mode, const int pn, const FwdArgs *a, int64_t tile) {
    const int64_t esz = dt == DT_F32 ? 4 : 2;
    const int64_t ntn = (a->N + TILE - 1) / TILE;
    const int64_t b = tile / ntn, n0 = (tile % ntn) * TILE, w = a->N - n0 < TILE ? a->N - n0 : TILE;
    float p[PARAM_ROWS][TILE], v[TILE];
    /* numbers (pn = 0): each row holds one value, read in place and kept in a register */
    if (pn) fill_params(p, a->params, a->n_param, n0, w);
    const float *tau = pn ? p[P_TAU_MUL] : a->params + P_TAU_MUL, *th = pn ? p[P_TH_CMP] : a->params + P_TH_CMP;
    for (int64_t j = 0; j < w; j++) v[j] = a->v0 ? LD(dt, a->v0, b * a->v0sb + (n0 + j) * a->v0sn) : 0.0f;
    fwd_tile(dt, contig, mode, pn, a->T, w, a->x + (b * a->xsb + n0 * a->xsn) * esz, a->xst, a->xsn,
             a->s + (b * a->osb + n0 * a->osn) * esz, a->h ? a->h + (b * a->osb + n0 * a->osn) * esz : NULL,
             a->ost, a->osn, v, tau, th, a->v_reset);
    if (a->bits) pack_tile(dt, a->T, w, a->s + (b * a->osb + n0 * a->osn) * esz, a->ost, a->osn,
                           a->bits + b * a->bsb + n0 / 8, a->bst);
    if (a->vT) for (int64_t j = 0; j < w; j++) ST(dt, a->vT, b * a->N + n0 + j, v[j]);
}

typedef void (*FwdTileFn)(const FwdArgs *, int64_t);
#define DEF_FWD(DT, C, M, PN) \
    static void fwd_##DT##_##C##_##M##_##PN(const FwdArgs *a, int64_t t) { fwd_one_tile(DT, C, M, PN, a, t); }
#define DEF_FWD_P(DT, C, M) DEF_FWD(DT, C, M, 0) DEF_FWD(DT, C, M, 1)
#define DEF_FWD_M(DT, C) DEF_FWD_P(DT, C, 0) DEF_FWD_P(DT, C, 1) DEF_FWD_P(DT, C, 2) DEF_FWD_P(DT, C, 3)
/* strided neurons (rare) read the parameter rows per neuron whatever they hold: fewer variants to build */
#define DEF_FWD_STRIDED(DT) DEF_FWD(DT, 0, 0, 1) DEF_FWD(DT, 0, 1, 1) DEF_FWD(DT, 0, 2, 1) DEF_FWD(DT, 0, 3, 1)
#define DEF_FWD_C(DT) DEF_FWD_STRIDED(DT) DEF_FWD_M(DT, 1)
DEF_FWD_C(DT_F32) DEF_FWD_C(DT_BF16) DEF_FWD_C(DT_F16)
#define ROW_FWD_P(DT, C, M) { fwd_##DT##_##C##_##M##_0, fwd_##DT##_##C##_##M##_1 }
#define ROW_FWD_S(DT, M) { fwd_##DT##_0_##M##_1, fwd_##DT##_0_##M##_1 }
#define ROW_FWD_C(DT) { { ROW_FWD_S(DT, 0), ROW_FWD_S(DT, 1), ROW_FWD_S(DT, 2), ROW_FWD_S(DT, 3) }, \
                        { ROW_FWD_P(DT, 1, 0), ROW_FWD_P(DT, 1, 1), ROW_FWD_P(DT, 1, 2), ROW_FWD_P(DT, 1, 3) } }
static const FwdTileFn FWD[3][2][4][2] = { ROW_FWD_C(DT_F32), ROW_FWD_C(DT_BF16), ROW_FWD_C(DT_F16) };

/* dt: DT_*; mode: 0 hard reset to 0, 1 hard reset to v_reset, 2 soft reset, 3 subtract_next.
 * Returns 0, or -1 for a bad dt. */
int lif_forward(int dt, int mode, const FwdArgs *a, int nthreads) {
    if (dt < 0 || dt > 2 || mode < 0 || mode > 3) return -1;
    const FwdTileFn f = FWD[dt][a->xsn == 1 && a->osn == 1][mode][a->n_param != 1];
    const int64_t ntiles = a->B * ((a->N + TILE - 1) / TILE);
#pragma omp parallel for schedule(static) num_threads(threads_for(a->B * a->T * a->N, nthreads))
    for (int64_t tile = 0; tile < ntiles; tile++) f(a, tile);
    return 0;
}

/* ---- backward ----------------------------------------------------------------------------- */

typedef struct {
    int64_t B, T, N;
    const char *gs; int64_t gsb, gst, gsn;    /* upstream gradient of the spikes */
    const char *x; int64_t xsb, xst, xsn;     /* the saved input: h is recomputed from it per tile */
    char *gx; int64_t gxsb, gxst, gxsn;       /* grad_x */
    const float *params; int64_t n_param;
    const char *gv; int64_t gvsb, gvsn;       /* gradient of the final potential (dtype), or NULL */
    const char *v0; int64_t v0sb, v0sn;       /* initial potential (dtype), or NULL: used by grad tau */
    char *gv0;                                /* [B, N] contiguous gradient of v0 (dtype), or NULL */
    float *gtau, *gth;                        /* [N] fp32 sums over batch and time, or NULL */
    float *work;                              /* [2, B, N] fp32 per-row partial sums when gtau/gth */
    float v_reset;                            /* fp32 (products), as the reference multiplies */
    float v_reset_fwd;                        /* rounded to the dtype, as the forward adds it */
    int detach;
    SurrogateConsts k;
    int sg, soft;                             /* surrogate and reset (RS_*): read by the strided variant */
} BwdArgs;

/* One reverse step over a tile. has_carry: 0 at the last step when nothing reaches v_{T-1}.
 * soft: RS_*; RS_NEXT (always detached, dR/dh = 1) takes the soft reset's detached path. */
INLINE void bwd_step(const int dt, const int contig, const int sg, const int soft, int has_carry, int detach,
                     int has_vr, int64_t w, const char *gs, int64_t gsn, const float *h, char *gx, int64_t gxsn,
                     float *c, float (*p)[TILE], float vr, const SurrogateConsts *k) {
    if (contig) { gsn = 1; gxsn = 1; }
    const float *tau = p[P_TAU_MUL], *thc = p[P_TH_CMP], *thm = p[P_TH_MUL];
    for (int64_t j = 0; j < w; j++) {
        float hv = h[j], g = LD(dt, gs, j * gsn);
        float z = R(dt, hv - thc[j]);
        float s = z > 0.0f ? 1.0f : 0.0f;
        float sgv = surrogate(dt, sg, z, k);
        float cj = c[j], gh;
        float d = soft ? R(dt, g - R(dt, cj * thm[j])) : R(dt, g - R(dt, cj * hv));
        if (!soft) d = has_vr ? R(dt, d + R(dt, cj * vr)) : d;
        d = detach ? g : d;
        float base = soft ? cj : cj * (1.0f - s);
        gh = R(dt, base + R(dt, d * sgv));
        gh = has_carry ? gh : R(dt, g * sgv); /* never 0 * inf when no carry */
        ST(dt, gx, j * gxsn, gh);
        c[j] = R(dt, gh * tau[j]);
    }
}

/* The tau/thresh terms of one step, in fp32 as snn.lif_torch computes them (not vectorisation-critical). */
static void bwd_param_step(const int dt, const int sg, const int soft, const BwdArgs *a, int64_t b, int64_t n0,
                           int64_t t, int64_t w, const float *hb, float (*p)[TILE], float *ghprev, float *acc_tau,
                           float *acc_th) {
    const int64_t T = a->T;
    for (int64_t j = 0; j < w; j++) {
        const int64_t n = n0 + j;
        float hv = hb[t * w + j];
        float g = LD(dt, a->gs, b * a->gsb + t * a->gst + n * a->gsn);
        float gh = LD(dt, a->gx, b * a->gxsb + t * a->gxst + n * a->gxsn);
        float z = R(dt, hv - p[P_TH_CMP][j]);
        float s = z > 0.0f ? 1.0f : 0.0f;
        float c = t == T - 1 ? (a->gv ? LD(dt, a->gv, b * a->gvsb + n * a->gvsn) : 0.0f) : ghprev[j] * p[P_TAU32][j];
        /* the previous step's h (v0 at t = 0) and spike */
        const float v0j = a->v0 ? LD(dt, a->v0, b * a->v0sb + n * a->v0sn) : 0.0f;
        const float hp = t == 0 ? v0j : hb[(t - 1) * w + j];
        const float sp = R(dt, hp - p[P_TH_CMP][j]) > 0.0f ? 1.0f : 0.0f;
        if (acc_tau) {
            float vp;
            if (t == 0 || soft == RS_NEXT) vp = hp; /* v0, or subtract_next's v = h */
            else {
                vp = soft ? hp - sp * p[P_TH32][j] : hp * (1.0f - sp);
                if (!soft && a->v_reset != 0.0f) vp = vp + sp * a->v_reset;
            }
            acc_tau[j] += gh * vp;
        }
        if (acc_th) {
            float sgv = surrogate(dt, sg, z, &a->k);
            float d = a->detach ? g : soft ? g - c * p[P_TH32][j] : g - c * (hv - a->v_reset);
            float tot = -(d * sgv);
            if (soft == RS_SOFT) tot = tot - c * s;
            if (soft == RS_NEXT) tot = tot - gh * sp; /* h_t holds - thresh * s_{t-1} */
            acc_th[j] += tot;
        }
        ghprev[j] = gh;
    }
}

/* The forward recurrence again, from the saved input, keeping h for every step of the tile in
 * hb [T, w] (fp32 holding the dtype's values): the forward then saves no new tensor. */
INLINE void recompute_h(const int dt, const int contig, const int soft, const BwdArgs *a, int64_t b, int64_t n0,
                        int64_t w, float (*p)[TILE], float *v, float *hb) {
    const int64_t esz = dt == DT_F32 ? 4 : 2;
    const int64_t xsn = contig ? 1 : a->xsn;
    const float *tau = p[P_TAU_MUL], *th = p[P_TH_CMP];
    const float vr = a->v_reset_fwd;
    const int has_vr = vr != 0.0f;
    for (int64_t j = 0; j < w; j++) v[j] = a->v0 ? LD(dt, a->v0, b * a->v0sb + (n0 + j) * a->v0sn) : 0.0f;
    for (int64_t t = 0; t < a->T; t++) {
        const char *xt = a->x + (b * a->xsb + t * a->xst + n0 * a->xsn) * esz;
        float *ht = hb + t * w;
        for (int64_t j = 0; j < w; j++) {
            float hv = R(dt, R(dt, v[j] * tau[j]) + LD(dt, xt, j * xsn));
            if (soft == RS_NEXT) hv = R(dt, hv - (v[j] > th[j] ? th[j] : 0.0f));
            float sv = hv > th[j] ? 1.0f : 0.0f;
            ht[j] = hv;
            float nv = soft == RS_NEXT ? hv : soft ? R(dt, hv - sv * th[j]) : hv * (1.0f - sv);
            v[j] = (!soft && has_vr) ? R(dt, nv + sv * vr) : nv;
        }
    }
}

INLINE void bwd_one_tile(const int dt, const int contig, const int sg, const int soft, const BwdArgs *a, int64_t tile,
                         float *hb) {
    const int64_t esz = dt == DT_F32 ? 4 : 2, B = a->B, T = a->T, N = a->N;
    const int64_t ntn = (N + TILE - 1) / TILE;
    const int64_t b = tile / ntn, n0 = (tile % ntn) * TILE, w = N - n0 < TILE ? N - n0 : TILE;
    const int params = a->gtau || a->gth, has_vr = a->v_reset != 0.0f;
    float p[PARAM_ROWS][TILE], c[TILE], ghprev[TILE], acc_tau[TILE], acc_th[TILE];
    fill_params(p, a->params, a->n_param, n0, w);
    recompute_h(dt, contig, soft, a, b, n0, w, p, c, hb);
    for (int64_t j = 0; j < w; j++) {
        c[j] = a->gv ? LD(dt, a->gv, b * a->gvsb + (n0 + j) * a->gvsn) : 0.0f;
        acc_tau[j] = acc_th[j] = 0.0f;
    }
    for (int64_t t = T - 1; t >= 0; t--) {
        const char *gs = a->gs + (b * a->gsb + t * a->gst + n0 * a->gsn) * esz;
        char *gx = a->gx + (b * a->gxsb + t * a->gxst + n0 * a->gxsn) * esz;
        const int has_carry = a->gv != NULL || t < T - 1;
        if (has_carry)
            bwd_step(dt, contig, sg, soft, 1, a->detach, has_vr, w, gs, a->gsn, hb + t * w, gx, a->gxsn, c, p, a->v_reset, &a->k);
        else
            bwd_step(dt, contig, sg, soft, 0, a->detach, has_vr, w, gs, a->gsn, hb + t * w, gx, a->gxsn, c, p, a->v_reset, &a->k);
        if (params)
            bwd_param_step(dt, sg, soft, a, b, n0, t, w, hb, p, ghprev, a->gtau ? acc_tau : NULL, a->gth ? acc_th : NULL);
    }
    if (a->gv0) for (int64_t j = 0; j < w; j++) ST(dt, a->gv0, b * N + n0 + j, c[j]);
    if (params)
        for (int64_t j = 0; j < w; j++) {
            a->work[b * N + n0 + j] = acc_tau[j];
            a->work[(B + b) * N + n0 + j] = acc_th[j];
        }
}

typedef void (*BwdTileFn)(const BwdArgs *, int64_t, float *);
/* contiguous neurons: specialised per (dtype, surrogate, hard/soft reset); subtract_next runs the generic
 * variant below (specialising it too cost ~40 % more build time for one reset mode) */
#define DEF_BWD(DT, SG, SOFT) \
    static void bwd_##DT##_##SG##_##SOFT(const BwdArgs *a, int64_t t, float *hb) { bwd_one_tile(DT, 1, SG, SOFT, a, t, hb); }
#define DEF_BWD_S(DT, SG) DEF_BWD(DT, SG, 0) DEF_BWD(DT, SG, 1)
#define DEF_BWD_SG(DT) DEF_BWD_S(DT, 0) DEF_BWD_S(DT, 1) DEF_BWD_S(DT, 2) DEF_BWD_S(DT, 3) DEF_BWD_S(DT, 4)
DEF_BWD_SG(DT_F32) DEF_BWD_SG(DT_BF16) DEF_BWD_SG(DT_F16)
#define ROW_BWD_S(DT, SG) { bwd_##DT##_##SG##_0, bwd_##DT##_##SG##_1 }
#define ROW_BWD_SG(DT) { ROW_BWD_S(DT, 0), ROW_BWD_S(DT, 1), ROW_BWD_S(DT, 2), ROW_BWD_S(DT, 3), ROW_BWD_S(DT, 4) }
static const BwdTileFn BWD[3][N_SG][2] = { ROW_BWD_SG(DT_F32), ROW_BWD_SG(DT_BF16), ROW_BWD_SG(DT_F16) };
/* strided neurons (rare: e.g. x[..., ::2]) and subtract_next: one variant per dtype, surrogate and reset
 * chosen per element */
#define DEF_BWD_GENERIC(DT) \
    static void bwd_##DT##_generic(const BwdArgs *a, int64_t t, float *hb) { bwd_one_tile(DT, 0, a->sg, a->soft, a, t, hb); }
DEF_BWD_GENERIC(DT_F32) DEF_BWD_GENERIC(DT_BF16) DEF_BWD_GENERIC(DT_F16)
static const BwdTileFn BWD_GENERIC[3] = { bwd_DT_F32_generic, bwd_DT_BF16_generic, bwd_DT_F16_generic };

/* dt: DT_*; sg: SG_*; soft: RS_* (the reset). Returns 0, or -1 for a bad argument. */
int lif_backward(int dt, int sg, int soft, const BwdArgs *a, int nthreads) {
    if (dt < 0 || dt > 2 || sg < 0 || sg >= N_SG || soft < RS_HARD || soft > RS_NEXT) return -1;
    const int contig = a->gsn == 1 && a->xsn == 1 && a->gxsn == 1;
    if (a->sg != sg || a->soft != soft) return -1;
    if (soft == RS_NEXT && !a->detach) return -1; /* subtract_next is implemented detached (snn/lif/spec.py) */
    const BwdTileFn f = contig && soft != RS_NEXT ? BWD[dt][sg][soft] : BWD_GENERIC[dt];
    const int64_t B = a->B, N = a->N, ntiles = B * ((N + TILE - 1) / TILE);
    int failed = 0;
#pragma omp parallel num_threads(threads_for(B * a->T * N, nthreads)) reduction(|| : failed)
    {
        float *hb = malloc(sizeof(float) * (size_t)a->T * TILE); /* this thread's h for one tile, all steps */
        if (!hb) failed = 1;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < ntiles; tile++)
            if (hb) f(a, tile, hb);
        free(hb);
    }
    if (failed) return -2;
    if (a->gtau || a->gth) { /* sums over the batch in a fixed order: independent of the thread count */
#pragma omp parallel for schedule(static) num_threads(threads_for(B * N, nthreads))
        for (int64_t n = 0; n < N; n++) {
            float st = 0.0f, sh = 0.0f;
            for (int64_t b = 0; b < B; b++) { st += a->work[b * N + n]; sh += a->work[(B + b) * N + n]; }
            if (a->gtau) a->gtau[n] = st;
            if (a->gth) a->gth[n] = sh;
        }
    }
    return 0;
}

/* ---- spikes as bits (snn/spikebits.py's layout), for tensors that no LIF pass packed ---------- */

/* s: contiguous [rows, n] 0/1 spikes in dtype dt; bits: contiguous [rows, (n+7)/8] */
int lif_pack_bits(int dt, const void *s, int64_t rows, int64_t n, uint8_t *bits, int nthreads) {
    if (dt < 0 || dt > 2) return -1;
    const int64_t nb = (n + 7) / 8;
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * n, nthreads))
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t k = 0; k < nb; k++) {
            unsigned byte = 0;
            for (int64_t i = 0; i < 8 && 8 * k + i < n; i++) byte |= (unsigned)(LD(dt, s, r * n + 8 * k + i) != 0.0f) << i;
            bits[r * nb + k] = (uint8_t)byte;
        }
    }
    return 0;
}

/* the inverse: s[r, j] = bit j of row r, as 0/1 in dtype dt */
int lif_unpack_bits(int dt, const uint8_t *bits, int64_t rows, int64_t n, void *s, int nthreads) {
    if (dt < 0 || dt > 2) return -1;
    const int64_t nb = (n + 7) / 8;
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * n, nthreads))
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) ST(dt, s, r * n + j, (float)((bits[r * nb + j / 8] >> (j % 8)) & 1u));
    return 0;
}

/* ---- the LIF and a 2x2 max-pooling after it, fused (the CSNN's conv blocks, snn/lif_pool.py) ----
 *
 * Input x [B, T, C, H, W] (neurons contiguous: C*H*W = N; H and W even; any batch and time strides,
 * so the first block's stride-0 time dimension is read in place); output: the spikes max-pooled 2x2,
 * stride 2, [B, T, N/4] with strides osb, ost. A tile is whole pairs of image rows (2W neurons
 * each: a pair never straddles two channels because H is even), so each pooling window lies in one
 * tile. The forward writes the tile's full-resolution spikes only into a per-thread buffer; the
 * backward recomputes h from x, takes each window's spikes from it and routes the pooled gradient
 * where F.max_pool2d's backward routes it: to the window's first maximum in row-major order (the
 * first spike, else the top-left element, as its strict > scan picks), as 0 + g (so -0 becomes +0,
 * as in its zero-filled, accumulated grad_input); the other three get 0. Then the LIF's reverse
 * step runs unchanged (bwd_step), so every gradient equals the unfused LIF + F.max_pool2d's bit
 * for bit. The full-resolution spikes, the pooling's int64 indices and the full-resolution
 * gradient of the spikes are never stored. Numbers tau/thresh only (n_param = 1), no v0, no final
 * potential, no parameter gradients: the Python side falls back to the unfused pair otherwise. */

/* g where keep is 1, +0 where it is 0, by a bit mask: the scalar remainder of a short row (7 or 14
 * windows) would otherwise branch on random spikes (the backward measured 3.6x slower that way) */
INLINE float g_or_zero(int keep, float g) {
    uint32_t u; memcpy(&u, &g, 4);
    u &= (uint32_t)0 - (uint32_t)keep;
    float r; memcpy(&r, &u, 4);
    return r;
}

INLINE int64_t pool_pairs_per_tile(int64_t width) { return TILE / (2 * width); }

INLINE int64_t pool_tiles_per_sample(int64_t N, int64_t width) {
    const int64_t ppt = pool_pairs_per_tile(width);
    return (N / (2 * width) + ppt - 1) / ppt;
}

/* tile -> its batch row b and its row pairs r0 .. r0+nr (of N / 2W per sample), for both passes */
typedef struct { int64_t b, r0, nr; } PoolTile;
INLINE PoolTile pool_tile(int64_t N, int64_t width, int64_t tile) {
    const int64_t ppt = pool_pairs_per_tile(width), pairs = N / (2 * width), ntn = pool_tiles_per_sample(N, width);
    const int64_t r0 = (tile % ntn) * ppt;
    const PoolTile pt = { tile / ntn, r0, pairs - r0 < ppt ? pairs - r0 : ppt };
    return pt;
}

INLINE void pool_fwd_one_tile(const int dt, const int mode, const FwdArgs *a, int64_t width, int64_t tile, char *sbuf) {
    const int64_t esz = dt == DT_F32 ? 4 : 2, half = width / 2;
    const PoolTile pt = pool_tile(a->N, width, tile);
    const int64_t b = pt.b, r0 = pt.r0, nr = pt.nr, n0 = r0 * 2 * width, w = nr * 2 * width;
    float v[TILE];
    for (int64_t j = 0; j < w; j++) v[j] = 0.0f;
    fwd_tile(dt, 1, mode, 0, a->T, w, a->x + (b * a->xsb + n0) * esz, a->xst, 1, sbuf, NULL, w, 1, v,
             a->params + P_TAU_MUL, a->params + P_TH_CMP, a->v_reset);
    for (int64_t t = 0; t < a->T; t++) {
        const char *st = sbuf + t * w * esz;
        char *ot = a->s + (b * a->osb + t * a->ost + r0 * half) * esz;
        for (int64_t r = 0; r < nr; r++) {
            const int64_t top = r * 2 * width, bottom = top + width;
            for (int64_t j = 0; j < half; j++) { /* spikes are 0/1: the maximum is 1 where any spiked */
                const float any = LD(dt, st, top + 2 * j) + LD(dt, st, top + 2 * j + 1) + LD(dt, st, bottom + 2 * j)
                                + LD(dt, st, bottom + 2 * j + 1);
                ST(dt, ot, r * half + j, any > 0.0f ? 1.0f : 0.0f);
            }
        }
    }
}

typedef void (*PoolFwdFn)(const FwdArgs *, int64_t, int64_t, char *);
#define DEF_PFWD(DT, M) \
    static void pfwd_##DT##_##M(const FwdArgs *a, int64_t wd, int64_t t, char *sb) { pool_fwd_one_tile(DT, M, a, wd, t, sb); }
#define DEF_PFWD_M(DT) DEF_PFWD(DT, 0) DEF_PFWD(DT, 1) DEF_PFWD(DT, 2) DEF_PFWD(DT, 3)
DEF_PFWD_M(DT_F32) DEF_PFWD_M(DT_BF16) DEF_PFWD_M(DT_F16)
#define ROW_PFWD(DT) { pfwd_##DT##_0, pfwd_##DT##_1, pfwd_##DT##_2, pfwd_##DT##_3 }
static const PoolFwdFn PFWD[3][4] = { ROW_PFWD(DT_F32), ROW_PFWD(DT_BF16), ROW_PFWD(DT_F16) };

static int pool_args_ok(int64_t N, int64_t width, int64_t xsn, int64_t n_param) {
    return width >= 2 && width % 2 == 0 && 2 * width <= TILE && N % (2 * width) == 0 && xsn == 1 && n_param == 1;
}

/* a: the forward's arguments with s = the pooled output (osn unused), h, v0, vT and bits NULL; width = W.
 * Returns 0, -1 for a bad argument, -2 when a buffer cannot be allocated. */
int lif_pool_forward(int dt, int mode, const FwdArgs *a, int64_t width, int nthreads) {
    if (dt < 0 || dt > 2 || mode < 0 || mode > 3 || !pool_args_ok(a->N, width, a->xsn, a->n_param)) return -1;
    if (a->h || a->v0 || a->vT || a->bits) return -1;
    const PoolFwdFn f = PFWD[dt][mode];
    const int64_t esz = dt == DT_F32 ? 4 : 2, ntiles = a->B * pool_tiles_per_sample(a->N, width);
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a->B * a->T * a->N, nthreads)) reduction(|| : failed)
    {
        char *sbuf = malloc((size_t)(esz * a->T * TILE)); /* this thread's full-resolution spikes of one tile */
        if (!sbuf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < ntiles; tile++)
            if (sbuf) f(a, width, tile, sbuf);
        free(sbuf);
    }
    return failed ? -2 : 0;
}

INLINE void pool_bwd_one_tile(const int dt, const int sg, const int soft, const BwdArgs *a, int64_t width, int64_t tile,
                              float *hb, char *gbuf) {
    const int64_t esz = dt == DT_F32 ? 4 : 2, half = width / 2, T = a->T;
    const PoolTile pt = pool_tile(a->N, width, tile);
    const int64_t b = pt.b, r0 = pt.r0, nr = pt.nr, n0 = r0 * 2 * width, w = nr * 2 * width;
    const int has_vr = a->v_reset != 0.0f;
    float p[PARAM_ROWS][TILE], c[TILE];
    fill_params(p, a->params, 1, 0, w);
    recompute_h(dt, 1, soft, a, b, n0, w, p, c, hb);
    const float th = a->params[P_TH_CMP]; /* n_param = 1: row r holds its number at r */
    for (int64_t j = 0; j < w; j++) c[j] = 0.0f;
    for (int64_t t = T - 1; t >= 0; t--) {
        const float *ht = hb + t * w;
        const char *gp = a->gs + (b * a->gsb + t * a->gst + r0 * half) * esz;
        for (int64_t r = 0; r < nr; r++) {
            const int64_t top = r * 2 * width, bottom = top + width;
            for (int64_t j = 0; j < half; j++) { /* the first spike of the window gets g */
                const int a = ht[top + 2 * j] > th, b = ht[top + 2 * j + 1] > th;
                const int c = ht[bottom + 2 * j] > th, d = ht[bottom + 2 * j + 1] > th;
                const float g = LD(dt, gp, r * half + j) + 0.0f;
                ST(dt, gbuf, top + 2 * j, g_or_zero(a | !(b | c | d), g)); /* no spike at all: the top-left one */
                ST(dt, gbuf, top + 2 * j + 1, g_or_zero(!a & b, g));
                ST(dt, gbuf, bottom + 2 * j, g_or_zero(!a & !b & c, g));
                ST(dt, gbuf, bottom + 2 * j + 1, g_or_zero(!a & !b & !c & d, g));
            }
        }
        char *gx = a->gx + (b * a->gxsb + t * a->gxst + n0) * esz;
        if (t < T - 1)
            bwd_step(dt, 1, sg, soft, 1, a->detach, has_vr, w, gbuf, 1, ht, gx, 1, c, p, a->v_reset, &a->k);
        else
            bwd_step(dt, 1, sg, soft, 0, a->detach, has_vr, w, gbuf, 1, ht, gx, 1, c, p, a->v_reset, &a->k);
    }
}

typedef void (*PoolBwdFn)(const BwdArgs *, int64_t, int64_t, float *, char *);
/* specialised per (dtype, surrogate) for the hard reset (the CSNN's IF neuron); other resets run the generic variant */
#define DEF_PBWD(DT, SG) \
    static void pbwd_##DT##_##SG(const BwdArgs *a, int64_t wd, int64_t t, float *hb, char *gb) { pool_bwd_one_tile(DT, SG, RS_HARD, a, wd, t, hb, gb); }
#define DEF_PBWD_SG(DT) DEF_PBWD(DT, 0) DEF_PBWD(DT, 1) DEF_PBWD(DT, 2) DEF_PBWD(DT, 3) DEF_PBWD(DT, 4)
DEF_PBWD_SG(DT_F32) DEF_PBWD_SG(DT_BF16) DEF_PBWD_SG(DT_F16)
#define ROW_PBWD(DT) { pbwd_##DT##_0, pbwd_##DT##_1, pbwd_##DT##_2, pbwd_##DT##_3, pbwd_##DT##_4 }
static const PoolBwdFn PBWD[3][N_SG] = { ROW_PBWD(DT_F32), ROW_PBWD(DT_BF16), ROW_PBWD(DT_F16) };
#define DEF_PBWD_GENERIC(DT) \
    static void pbwd_##DT##_generic(const BwdArgs *a, int64_t wd, int64_t t, float *hb, char *gb) { pool_bwd_one_tile(DT, a->sg, a->soft, a, wd, t, hb, gb); }
DEF_PBWD_GENERIC(DT_F32) DEF_PBWD_GENERIC(DT_BF16) DEF_PBWD_GENERIC(DT_F16)
static const PoolBwdFn PBWD_GENERIC[3] = { pbwd_DT_F32_generic, pbwd_DT_BF16_generic, pbwd_DT_F16_generic };

/* a: the backward's arguments with gs = the pooled spikes' gradient [B, T, N/4] (strides gsb, gst), gx
 * contiguous in the neurons, gv, v0, gv0, gtau, gth and work NULL; width = W. Returns as lif_backward. */
int lif_pool_backward(int dt, int sg, int soft, const BwdArgs *a, int64_t width, int nthreads) {
    if (dt < 0 || dt > 2 || sg < 0 || sg >= N_SG || soft < RS_HARD || soft > RS_NEXT) return -1;
    if (a->sg != sg || a->soft != soft || (soft == RS_NEXT && !a->detach)) return -1;
    if (!pool_args_ok(a->N, width, a->xsn, a->n_param) || a->gxsn != 1) return -1;
    if (a->gv || a->v0 || a->gv0 || a->gtau || a->gth) return -1;
    const PoolBwdFn f = soft == RS_HARD ? PBWD[dt][sg] : PBWD_GENERIC[dt];
    const int64_t esz = dt == DT_F32 ? 4 : 2, ntiles = a->B * pool_tiles_per_sample(a->N, width);
    int failed = 0;
#pragma omp parallel num_threads(threads_for(a->B * a->T * a->N, nthreads)) reduction(|| : failed)
    {
        float *hb = malloc(sizeof(float) * (size_t)a->T * TILE);
        char *gbuf = malloc((size_t)esz * TILE); /* one step's full-resolution gradient of the tile's spikes */
        if (!hb || !gbuf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < ntiles; tile++)
            if (hb && gbuf) f(a, width, tile, hb, gbuf);
        free(hb);
        free(gbuf);
    }
    return failed ? -2 : 0;
}
