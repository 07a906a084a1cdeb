// Per-sample GRU generation loop for smf's audio tier: the whole T-step loop for B voices in one call.
//
// Built by fastgen/cpp.py into a plain shared library (C ABI, loaded with ctypes: no torch headers, so it compiles
// in a couple of seconds, and ctypes drops the GIL while it runs). Same maths as fastgen/torch_loop.py:
//   x = relu(b + a*w_a + sum_c cond_c*w_c);  L GRU cells;  logits = W_out h + b;  class = inverse CDF at u[b,t].
// A source-filter tier (P > 0) feeds three scalars instead of a: the previous sample, the LPC prediction from the
// last P samples and this step's coefficients, the previous excitation; the sample is prediction + excitation.
//
// Speed: batch-1 generation is a chain of matrix-vector products, bound by how fast weights stream from cache.
// GRU weights are packed once (cpp.py) per block of 16 hidden units as [K][48] (the r, z, n rows of those units),
// for W_ih and W_hh alike: one sequential pass over k feeds 6 accumulators per voice, and the gates are applied in
// registers (a fused cell, no gate buffers). The output layer uses 64-row tiles [K][64]. Up to 4 voices share each
// weight load (matrix-matrix for batched voices). Formats: fp32, bf16 (upper half of fp32) weights with fp32
// activations, and int8: int8 weights (per-row scale) x int8 activations (per-vector scale, per step) with int32
// sums, on AVX-512 VNNI (vpdpbusd, 64 multiply-adds per instruction, weights packed [K/4][rows][4]) when cpuid says
// so, else a portable path that computes the identical sums. The VNNI code is compiled with a target attribute, so
// one build serves any x86 CPU. GCC vector extensions (16 x float) lower to AVX-512, AVX2 or SSE, whatever -march
// allows, so the file builds with or without -march=native. Threads: independent voice groups when there are
// enough voices; otherwise (one live voice) a team splits the unit blocks of every layer and meets at a spin
// barrier per layer.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <atomic>
#include <vector>
#include <algorithm>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // also for the target("avx512...") functions of a portable build
#define SMF_X86 1
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int8_t v16b __attribute__((vector_size(16)));
typedef uint16_t v16h __attribute__((vector_size(32)));

enum { P_FP32 = 0, P_BF16 = 1, P_INT8 = 2 };
static const int TILE = 64;  // rows per packed tile (4 vectors of 16)

static inline v16 vload(const float* p) { v16 v; std::memcpy(&v, p, 64); return v; }
static inline void vstore(float* p, v16 v) { std::memcpy(p, &v, 64); }
static inline v16 splat(float x) { return v16{} + x; }

static inline v16 wload(const float* p) { return vload(p); }
// Widening loads: GCC scalarises __builtin_convertvector for narrow integer vectors, so use intrinsics where the
// target has them and a plain loop otherwise (correct everywhere, fast where it matters).
static inline v16 wload(const uint16_t* p) {
#if defined(__AVX512F__)
    __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
    v16 f; std::memcpy(&f, &u, 64); return f;
#elif defined(__AVX2__)
    __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16);
    __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(p + 8))), 16);
    v16 f; std::memcpy(&f, &lo, 32); std::memcpy((char*)&f + 32, &hi, 32); return f;
#else
    uint32_t u[16]; for (int i = 0; i < 16; i++) u[i] = (uint32_t)p[i] << 16;
    v16 f; std::memcpy(&f, u, 64); return f;
#endif
}
static inline v16 wload(const int8_t* p) {
#if defined(__AVX512F__)
    __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
    v16 r; std::memcpy(&r, &f, 64); return r;
#elif defined(__AVX2__)
    __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
    __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8))));
    v16 r; std::memcpy(&r, &lo, 32); std::memcpy((char*)&r + 32, &hi, 32); return r;
#else
    float f[16]; for (int i = 0; i < 16; i++) f[i] = (float)p[i];
    v16 r; std::memcpy(&r, f, 64); return r;
#endif
}

// exp for |x| <= 88 via 2^n * p(r), r in [-ln2/2, ln2/2], degree-6 polynomial: ~1 ulp, all lanes at once.
static inline v16 vexp(v16 x) {
    x = x < splat(-87.f) ? splat(-87.f) : x;
    x = x > splat(88.f) ? splat(88.f) : x;
    const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
    v16 t = x * splat(1.44269504088896341f) + splat(magic);
    v16 n = t - splat(magic);
    v16 r = x - n * splat(0.693145751953125f);
    r = r - n * splat(1.428606765330187045e-06f);
    v16 p = splat(1.f / 720.f);
    p = p * r + splat(1.f / 120.f);
    p = p * r + splat(1.f / 24.f);
    p = p * r + splat(1.f / 6.f);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.f);
    p = p * r + splat(1.f);
    v16i ti; std::memcpy(&ti, &t, 64);
    v16i mi; float mf = magic; int32_t mb; std::memcpy(&mb, &mf, 4); mi = v16i{} + mb;
    v16i e = (ti - mi + 127) << 23;
    v16 s; std::memcpy(&s, &e, 64);
    return p * s;
}
static inline v16 vsigmoid(v16 x) { return splat(1.f) / (splat(1.f) + vexp(-x)); }
static inline v16 vtanh(v16 x) { return splat(1.f) - splat(2.f) / (vexp(x + x) + splat(1.f)); }
static inline float ssigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

// y[j][r] = bias[r] + scale[r] * sum_k W[r][k] x[j][k]  for NV voices j, all padded rows r (multiple of TILE).
template <typename WT, int NV>
static void matvec_nv(const WT* W, const float* scale, const float* bias, int R, int K,
                      const float* x, int xs, float* y, int ys) {
    for (int r0 = 0; r0 < R; r0 += TILE) {
        const WT* w = W + (size_t)r0 * K;
        v16 acc[NV][4];
        for (int j = 0; j < NV; j++)
            for (int i = 0; i < 4; i++) acc[j][i] = v16{};
        for (int k = 0; k < K; k++) {
            const WT* wk = w + (size_t)k * TILE;
            v16 w0 = wload(wk), w1 = wload(wk + 16), w2 = wload(wk + 32), w3 = wload(wk + 48);
            for (int j = 0; j < NV; j++) {
                v16 xv = splat(x[j * xs + k]);
                acc[j][0] += w0 * xv; acc[j][1] += w1 * xv; acc[j][2] += w2 * xv; acc[j][3] += w3 * xv;
            }
        }
        for (int j = 0; j < NV; j++)
            for (int i = 0; i < 4; i++) {
                v16 s = acc[j][i];
                if (scale) s = s * vload(scale + r0 + 16 * i);
                vstore(y + j * ys + r0 + 16 * i, s + vload(bias + r0 + 16 * i));
            }
    }
}

struct Net {
    int H, L, C, Q, Hp, Qp;  // Hp = H padded to 16 (unit blocks), Qp = Q padded to TILE
    int isa;                 // ISA_PORTABLE or ISA_VNNI (int8 only: which packed layout the weights are in)
    const float *w_a, *w_c, *b_inp;
    const void* const* w_ih; const float* const* s_ih; const float* const* b_ih; const int32_t* const* c_ih;
    const void* const* w_hh; const float* const* s_hh; const float* const* b_hh; const int32_t* const* c_hh;
    const void* w_out; const float* s_out; const float* b_out; const int32_t* c_out;
};

// The output layer over a range of 64-row tiles [t0, t1), for nv voices in groups of up to 4.
template <typename WT>
static void matvec(const WT* W, const float* scale, const float* bias, int t0, int t1, int K,
                   const float* x, int xs, int nv, float* y, int ys) {
    for (int t = t0; t < t1; t++) {
        const size_t r0 = (size_t)t * TILE;
        const WT* Wt = W + r0 * K;
        const float* st = scale ? scale + r0 : nullptr;
        for (int j = 0; j < nv; j += 4) {
            int n = std::min(4, nv - j);
            const float* xj = x + (size_t)j * xs;
            float* yj = y + (size_t)j * ys + r0;
            if (n == 4) matvec_nv<WT, 4>(Wt, st, bias + r0, TILE, K, xj, xs, yj, ys);
            else if (n == 3) matvec_nv<WT, 3>(Wt, st, bias + r0, TILE, K, xj, xs, yj, ys);
            else if (n == 2) matvec_nv<WT, 2>(Wt, st, bias + r0, TILE, K, xj, xs, yj, ys);
            else matvec_nv<WT, 1>(Wt, st, bias + r0, TILE, K, xj, xs, yj, ys);
        }
    }
}

// One GRU layer for a block of 16 hidden units and NV voices, fused: both products (input and recurrent) in one
// pass over k with 6 accumulators per voice (r, z, n rows of the block), then the gates in registers.
// Weights are packed per unit block as [K][48] = r(16) z(16) n(16) rows, so the pass is one sequential stream.
template <typename WT, int NV>
static void gru_block(const WT* Wi, const WT* Wh, const float* si, const float* sh, const float* bi,
                      const float* bh, int K, const float* x, const float* h, int xs, float* hn, int u0) {
    v16 ai[NV][3], ah[NV][3];
    for (int j = 0; j < NV; j++)
        for (int g = 0; g < 3; g++) { ai[j][g] = v16{}; ah[j][g] = v16{}; }
    for (int k = 0; k < K; k++) {
        const WT* wi = Wi + (size_t)k * 48;
        const WT* wh = Wh + (size_t)k * 48;
        v16 i0 = wload(wi), i1 = wload(wi + 16), i2 = wload(wi + 32);
        v16 h0 = wload(wh), h1 = wload(wh + 16), h2 = wload(wh + 32);
        for (int j = 0; j < NV; j++) {
            v16 xv = splat(x[j * xs + k]), hv = splat(h[j * xs + k]);
            ai[j][0] += i0 * xv; ai[j][1] += i1 * xv; ai[j][2] += i2 * xv;
            ah[j][0] += h0 * hv; ah[j][1] += h1 * hv; ah[j][2] += h2 * hv;
        }
    }
    for (int j = 0; j < NV; j++) {
        v16 g[3], q[3];
        for (int c = 0; c < 3; c++) {
            g[c] = (si ? ai[j][c] * vload(si + 16 * c) : ai[j][c]) + vload(bi + 16 * c);
            q[c] = (sh ? ah[j][c] * vload(sh + 16 * c) : ah[j][c]) + vload(bh + 16 * c);
        }
        v16 r = vsigmoid(g[0] + q[0]);
        v16 z = vsigmoid(g[1] + q[1]);
        v16 n = vtanh(g[2] + r * q[2]);
        v16 hold = vload(h + j * xs + u0);
        vstore(hn + j * xs + u0, n + z * (hold - n));
    }
}

template <typename WT>
static void gru_blocks(const WT* Wi, const WT* Wh, const float* si, const float* sh, const float* bi,
                       const float* bh, int ub0, int ub1, int K, const float* x, const float* h, int xs, int nv,
                       float* hn) {
    for (int ub = ub0; ub < ub1; ub++) {
        const size_t w0 = (size_t)ub * K * 48, v0 = (size_t)ub * 48;
        const float* sib = si ? si + v0 : nullptr;
        const float* shb = sh ? sh + v0 : nullptr;
        // at most 3 voices per pass: 18 accumulators + 6 weight vectors + broadcasts fit AVX-512's 32 registers
        for (int j = 0; j < nv; j += 3) {
            int n = std::min(3, nv - j);
            const float* xj = x + (size_t)j * xs;
            const float* hj = h + (size_t)j * xs;
            float* hnj = hn + (size_t)j * xs;
#define SMF_GRU(NV) gru_block<WT, NV>(Wi + w0, Wh + w0, sib, shb, bi + v0, bh + v0, K, xj, hj, xs, hnj, ub * 16)
            if (n == 3) SMF_GRU(3); else if (n == 2) SMF_GRU(2); else SMF_GRU(1);
#undef SMF_GRU
        }
    }
}

// ---- int8: int8 weights (one scale per row) x int8 activations (one scale per vector and step) ----------------
// Each activation vector (the layer-0 input and each new hidden state) is quantised once per step, symmetric:
// s = max|v| / 127, q = round(v * 127 / max|v|) in [-127, 127]. A new hidden state is both the next layer's input
// now and its own layer's recurrent input next step, so L+1 quantisations per step. q is kept as float (portable
// path: exact, since every partial sum is an integer below 127*127*K < 2^24) and as u8 = q + 128 for VNNI's
// vpdpbusd (u8 x s8; the +128 comes back out as 128 * rowsum(W), precomputed per row by cpp.py). Both paths form
// the same integer sums and the same float epilogue, so they give identical samples. The state update itself
// (n + z * (h - n)) uses the fp32 hidden state; only matrix inputs are quantised.
enum { ISA_PORTABLE = 0, ISA_VNNI = 1 };

struct QVec {  // nv quantised vectors of Hp values and their scales
    std::vector<float> f;
    std::vector<uint8_t> u;
    std::vector<float> s;
    void init(int nv, int Hp) { f.assign((size_t)nv * Hp, 0.f); u.assign((size_t)nv * Hp, 128); s.assign(nv, 0.f); }
};

static float quantize_act(const float* v, int n, float* qf, uint8_t* qu) {
    float m = 0.f;
    for (int k = 0; k < n; k++) m = std::max(m, std::fabs(v[k]));
    const float inv = m > 0.f ? 127.f / m : 0.f;
    for (int k = 0; k < n; k++) {
        float r = std::nearbyint(v[k] * inv);  // round half to even, as torch.round
        r = std::min(127.f, std::max(-127.f, r));
        qf[k] = r;
        qu[k] = (uint8_t)((int)r + 128);
    }
    return m / 127.f;
}

static void quantize_all(const float* v, int nv, int Hp, QVec& q) {
    for (int j = 0; j < nv; j++)
        q.s[j] = quantize_act(v + (size_t)j * Hp, Hp, &q.f[(size_t)j * Hp], &q.u[(size_t)j * Hp]);
}

// the gates of one unit block for one voice from its six sums: gate = sum * (row scale * activation scale) + bias
static inline void gru_update(const v16* ai, const v16* ah, const float* si, const float* sh, float sx, float shs,
                              const float* bi, const float* bh, const float* hold, float* hn) {
    v16 g[3], q[3];
    for (int c = 0; c < 3; c++) {
        g[c] = ai[c] * (vload(si + 16 * c) * splat(sx)) + vload(bi + 16 * c);
        q[c] = ah[c] * (vload(sh + 16 * c) * splat(shs)) + vload(bh + 16 * c);
    }
    v16 r = vsigmoid(g[0] + q[0]);
    v16 z = vsigmoid(g[1] + q[1]);
    v16 n = vtanh(g[2] + r * q[2]);
    v16 h = vload(hold);
    vstore(hn, n + z * (h - n));
}

// portable: weights [K][48] int8 per unit block, activations as float integers
template <int NV>
static void gru_block_q8(const int8_t* Wi, const int8_t* Wh, const float* si, const float* sh, const float* bi,
                         const float* bh, int K, const float* qx, const float* sx, const float* qh,
                         const float* shs, const float* h, int xs, float* hn, int u0) {
    v16 ai[NV][3], ah[NV][3];
    for (int j = 0; j < NV; j++)
        for (int g = 0; g < 3; g++) { ai[j][g] = v16{}; ah[j][g] = v16{}; }
    for (int k = 0; k < K; k++) {
        const int8_t* wi = Wi + (size_t)k * 48;
        const int8_t* wh = Wh + (size_t)k * 48;
        v16 i0 = wload(wi), i1 = wload(wi + 16), i2 = wload(wi + 32);
        v16 h0 = wload(wh), h1 = wload(wh + 16), h2 = wload(wh + 32);
        for (int j = 0; j < NV; j++) {
            v16 xv = splat(qx[j * xs + k]), hv = splat(qh[j * xs + k]);
            ai[j][0] += i0 * xv; ai[j][1] += i1 * xv; ai[j][2] += i2 * xv;
            ah[j][0] += h0 * hv; ah[j][1] += h1 * hv; ah[j][2] += h2 * hv;
        }
    }
    for (int j = 0; j < NV; j++)
        gru_update(ai[j], ah[j], si, sh, sx[j], shs[j], bi, bh, h + j * xs + u0, hn + j * xs + u0);
}

// portable output tile: weights [K][64] int8, y = sum * (row scale * activation scale) + bias
static void out_tile_q8(const int8_t* W, const float* scale, const float* bias, int K, const float* qx,
                        const float* sx, int xs, int nv, float* y, int ys) {
    for (int j = 0; j < nv; j++) {
        v16 acc[4] = {v16{}, v16{}, v16{}, v16{}};
        for (int k = 0; k < K; k++) {
            const int8_t* wk = W + (size_t)k * TILE;
            v16 xv = splat(qx[j * xs + k]);
            for (int i = 0; i < 4; i++) acc[i] += wload(wk + 16 * i) * xv;
        }
        for (int i = 0; i < 4; i++)
            vstore(y + j * ys + 16 * i, acc[i] * (vload(scale + 16 * i) * splat(sx[j])) + vload(bias + 16 * i));
    }
}

#if SMF_X86
// AVX-512 VNNI: weights [K/4][48][4] per unit block (16 rows x 4 consecutive k = one 64-byte vector), so one
// vpdpbusd does 64 multiply-adds; 4 activation bytes are broadcast to all lanes.
#define SMF_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

static inline int32_t load4(const uint8_t* p) { int32_t v; std::memcpy(&v, p, 4); return v; }

template <int NV>
SMF_VNNI static void gru_block_vnni(const int8_t* Wi, const int8_t* Wh, const int32_t* ci, const int32_t* ch,
                                    const float* si, const float* sh, const float* bi, const float* bh, int K4,
                                    const uint8_t* ux, const float* sx, const uint8_t* uh, const float* shs,
                                    const float* h, int xs, float* hn, int u0) {
    __m512i ai[NV][3], ah[NV][3];
    for (int j = 0; j < NV; j++)
        for (int g = 0; g < 3; g++) { ai[j][g] = _mm512_setzero_si512(); ah[j][g] = _mm512_setzero_si512(); }
    for (int k = 0; k < K4; k++) {
        const int8_t* wi = Wi + (size_t)k * 192;
        const int8_t* wh = Wh + (size_t)k * 192;
        __m512i i0 = _mm512_loadu_si512(wi), i1 = _mm512_loadu_si512(wi + 64), i2 = _mm512_loadu_si512(wi + 128);
        __m512i h0 = _mm512_loadu_si512(wh), h1 = _mm512_loadu_si512(wh + 64), h2 = _mm512_loadu_si512(wh + 128);
        for (int j = 0; j < NV; j++) {
            __m512i xv = _mm512_set1_epi32(load4(ux + j * xs + 4 * k));
            __m512i hv = _mm512_set1_epi32(load4(uh + j * xs + 4 * k));
            ai[j][0] = _mm512_dpbusd_epi32(ai[j][0], xv, i0);
            ai[j][1] = _mm512_dpbusd_epi32(ai[j][1], xv, i1);
            ai[j][2] = _mm512_dpbusd_epi32(ai[j][2], xv, i2);
            ah[j][0] = _mm512_dpbusd_epi32(ah[j][0], hv, h0);
            ah[j][1] = _mm512_dpbusd_epi32(ah[j][1], hv, h1);
            ah[j][2] = _mm512_dpbusd_epi32(ah[j][2], hv, h2);
        }
    }
    for (int j = 0; j < NV; j++) {
        v16 a[3], b[3];
        for (int c = 0; c < 3; c++) {
            __m512 fa = _mm512_cvtepi32_ps(_mm512_sub_epi32(ai[j][c], _mm512_loadu_si512(ci + 16 * c)));
            __m512 fb = _mm512_cvtepi32_ps(_mm512_sub_epi32(ah[j][c], _mm512_loadu_si512(ch + 16 * c)));
            std::memcpy(&a[c], &fa, 64);
            std::memcpy(&b[c], &fb, 64);
        }
        gru_update(a, b, si, sh, sx[j], shs[j], bi, bh, h + j * xs + u0, hn + j * xs + u0);
    }
}

// output tile: weights [K/4][64][4]
SMF_VNNI static void out_tile_vnni(const int8_t* W, const int32_t* corr, const float* scale, const float* bias,
                                   int K4, const uint8_t* ux, const float* sx, int xs, int nv, float* y, int ys) {
    for (int j = 0; j < nv; j++) {
        __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                          _mm512_setzero_si512()};
        for (int k = 0; k < K4; k++) {
            const int8_t* wk = W + (size_t)k * 4 * TILE;
            __m512i xv = _mm512_set1_epi32(load4(ux + j * xs + 4 * k));
            for (int i = 0; i < 4; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], xv, _mm512_loadu_si512(wk + 64 * i));
        }
        for (int i = 0; i < 4; i++) {
            __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i], _mm512_loadu_si512(corr + 16 * i)));
            v16 a;
            std::memcpy(&a, &f, 64);
            vstore(y + j * ys + 16 * i, a * (vload(scale + 16 * i) * splat(sx[j])) + vload(bias + 16 * i));
        }
    }
}
#endif

static int best_isa() {
#if SMF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        return ISA_VNNI;
#endif
    return ISA_PORTABLE;
}

// layer l of the int8 net for unit blocks [ub0, ub1) and nv voices
static void gru_blocks_q8(const Net& n, int l, int ub0, int ub1, const QVec& qx, const QVec& qh, const float* h,
                          int nv, float* hn) {
    const int K = n.H, Hp = n.Hp;
    const int8_t* Wi = (const int8_t*)n.w_ih[l];
    const int8_t* Wh = (const int8_t*)n.w_hh[l];
    for (int ub = ub0; ub < ub1; ub++) {
        const size_t v0 = (size_t)ub * 48;
        for (int j = 0; j < nv; j += 3) {
            const int m = std::min(3, nv - j);
            const size_t a0 = (size_t)j * Hp;
#if SMF_X86
            if (n.isa == ISA_VNNI) {
                const size_t w0 = (size_t)ub * Hp * 48;
#define SMF_G(NV) gru_block_vnni<NV>(Wi + w0, Wh + w0, n.c_ih[l] + v0, n.c_hh[l] + v0, n.s_ih[l] + v0, \
    n.s_hh[l] + v0, n.b_ih[l] + v0, n.b_hh[l] + v0, Hp / 4, &qx.u[a0], &qx.s[j], &qh.u[a0], &qh.s[j], h + a0, \
    Hp, hn + a0, ub * 16)
                if (m == 3) SMF_G(3); else if (m == 2) SMF_G(2); else SMF_G(1);
#undef SMF_G
                continue;
            }
#endif
            const size_t w0 = (size_t)ub * K * 48;
#define SMF_G(NV) gru_block_q8<NV>(Wi + w0, Wh + w0, n.s_ih[l] + v0, n.s_hh[l] + v0, n.b_ih[l] + v0, \
    n.b_hh[l] + v0, K, &qx.f[a0], &qx.s[j], &qh.f[a0], &qh.s[j], h + a0, Hp, hn + a0, ub * 16)
            if (m == 3) SMF_G(3); else if (m == 2) SMF_G(2); else SMF_G(1);
#undef SMF_G
        }
    }
}

static void out_q8(const Net& n, int t0, int t1, const QVec& qx, int nv, float* y) {
    for (int t = t0; t < t1; t++) {
        const size_t r0 = (size_t)t * TILE;
#if SMF_X86
        if (n.isa == ISA_VNNI) {
            out_tile_vnni((const int8_t*)n.w_out + r0 * n.Hp, n.c_out + r0, n.s_out + r0, n.b_out + r0, n.Hp / 4,
                          qx.u.data(), qx.s.data(), n.Hp, nv, y + r0, n.Qp);
            continue;
        }
#endif
        out_tile_q8((const int8_t*)n.w_out + r0 * n.H, n.s_out + r0, n.b_out + r0, n.H, qx.f.data(), qx.s.data(),
                    n.Hp, nv, y + r0, n.Qp);
    }
}

// A sense-reversing spin barrier for a team of threads that share one voice group (row split). Spins briefly, then
// yields, so an oversubscribed machine degrades instead of livelocking.
struct Barrier {
    std::atomic<int> count{0};
    std::atomic<int> phase{0};
    int n = 1;
    void wait() {
        if (n == 1) return;
        int ph = phase.load(std::memory_order_acquire);
        if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
            count.store(0, std::memory_order_relaxed);
            phase.store(ph + 1, std::memory_order_release);
            return;
        }
        for (int spins = 0; phase.load(std::memory_order_acquire) == ph; spins++) {
            if (spins > 2000) std::this_thread::yield();
#if defined(__x86_64__)
            else __builtin_ia32_pause();
#endif
        }
    }
};

// State a team shares: hidden states (double-buffered per layer: read one, write the other, flip) and logits.
struct Team {
    int b0, nv, size;
    std::vector<float> h[2], logits;
    std::vector<int> parity;
    Barrier barrier;
};

// class = inverse CDF of softmax(logits / temperature) at u; temperature <= 0: argmax
static int sample_class(const float* lg, int Q, float temperature, float u) {
    int cls = 0;
    if (temperature <= 0.f) {
        for (int k = 1; k < Q; k++) if (lg[k] > lg[cls]) cls = k;
        return cls;
    }
    float e[TILE * 8];  // Q <= 512 (checked on entry)
    float m = -INFINITY;
    for (int k = 0; k < Q; k++) { e[k] = lg[k] / temperature; m = std::max(m, e[k]); }
    int k = 0;
    for (; k + 16 <= Q; k += 16) vstore(e + k, vexp(vload(e + k) - splat(m)));
    for (; k < Q; k++) e[k] = std::exp(e[k] - m);
    float s = 0.f;
    for (k = 0; k < Q; k++) s += e[k];
    const float target = u * s;
    float cum = 0.f;
    for (k = 0; k < Q; k++) { cum += e[k]; if (cum > target) return k; }
    return Q - 1;
}

// The source-filter tier (P > 0, smf.rnn.source_filter): mu-law companding of a sample and decoding of a class,
// the same float maths as smf.rnn.model.compand / mulaw_decode.
static inline float compand(float x, int Q) {
    const float mu = (float)(Q - 1);
    x = std::min(1.f, std::max(-1.f, x));
    const float y = std::log1p(mu * std::fabs(x)) / (float)std::log1p((double)mu);
    return x > 0.f ? y : (x < 0.f ? -y : 0.f);
}
static inline float mulaw_decode(int cls, int Q) {
    const float mu = (float)(Q - 1);
    const float y = (float)cls / mu * 2.f - 1.f;
    const float m = std::expm1(std::fabs(y) * (float)std::log1p((double)mu)) / mu;
    return y > 0.f ? m : (y < 0.f ? -m : 0.f);
}

// Q8: the int8 net (int8 activations too); otherwise WT is the weight format and activations are fp32.
// P > 0: a source-filter tier. lpc [B,T,P] holds each step's predictor coefficients, hist [B,P] the last P audio
// samples (newest first, updated), audio [B,T] receives the samples: x = clamp(prediction + decoded excitation).
template <typename WT, bool Q8>
static void run_team(const Net& n, Team& team, int tid, int B, int T, const float* cond, const float* u,
                     float* h, int64_t* prev, float temperature, int64_t* out, int P, const float* lpc, float* hist,
                     float* audio) {
    const int H = n.H, L = n.L, C = n.C, Q = n.Q, Hp = n.Hp, nv = team.nv, b0 = team.b0;
    const int nub = Hp / 16, ntiles = n.Qp / TILE;
    // this thread's share of unit blocks and output tiles
    const int ub0 = nub * tid / team.size, ub1 = nub * (tid + 1) / team.size;
    const int t0 = ntiles * tid / team.size, t1 = ntiles * (tid + 1) / team.size;
    std::vector<float> x((size_t)nv * Hp, 0.f);
    std::vector<int64_t> last(prev + b0, prev + b0 + nv);
    const float ascale = 2.0f / (float)(Q - 1);
    // source-filter state: every thread keeps its own copy of the voices' past samples (same data, same result)
    std::vector<float> past(P > 0 ? hist + (size_t)b0 * P : nullptr, P > 0 ? hist + (size_t)(b0 + nv) * P : nullptr);
    std::vector<float> pred(nv, 0.f);
    // int8: this thread's quantised copies of the layer-0 input and of every layer's hidden state (each thread
    // quantises whole vectors itself after the barrier: same data, same result, no extra synchronisation)
    QVec qx;
    std::vector<QVec> qh(Q8 ? L : 0);
    if (Q8) {
        qx.init(nv, Hp);
        for (int l = 0; l < L; l++) {
            qh[l].init(nv, Hp);
            quantize_all(team.h[team.parity[l]].data() + (size_t)l * nv * Hp, nv, Hp, qh[l]);
        }
    }
    for (int t = 0; t < T; t++) {
        for (int j = 0; j < nv; j++) {  // input layer: cheap, every thread computes all of it
            const int b = b0 + j;
            const float a = (float)last[j] * ascale - 1.0f;
            const float* c = cond + ((size_t)b * T + t) * C;
            float* xj = &x[(size_t)j * Hp];
            // the generated part of the input: a, or for a source-filter tier [previous sample, LPC prediction,
            // previous excitation] as smf.rnn.source_filter
            float g[3] = {a, 0.f, 0.f};
            int G = 1;
            if (P > 0) {
                const float* co = lpc + ((size_t)b * T + t) * P;
                const float* pj = &past[(size_t)j * P];
                float pr = 0.f;
                for (int k = 0; k < P; k++) pr -= co[k] * pj[k];
                pred[j] = pr;
                g[0] = compand(pj[0], Q);
                g[1] = compand(pr, Q);
                g[2] = a;
                G = 3;
            }
            for (int i = 0; i < H; i++) {
                float v = n.b_inp[i];
                for (int k = 0; k < G; k++) v = v + g[k] * n.w_a[k * H + i];
                for (int q = 0; q < C; q++) v = v + c[q] * n.w_c[q * H + i];
                xj[i] = v > 0.f ? v : 0.f;
            }
        }
        const float* xin = x.data();
        const QVec* qin = &qx;
        if (Q8) quantize_all(x.data(), nv, Hp, qx);
        for (int l = 0; l < L; l++) {
            const size_t off = (size_t)l * nv * Hp;
            const int p = team.parity[l];
            const float* hcur = team.h[p].data() + off;
            float* hnext = team.h[1 - p].data() + off;
            if (Q8)
                gru_blocks_q8(n, l, ub0, ub1, *qin, qh[l], hcur, nv, hnext);
            else
                gru_blocks<WT>((const WT*)n.w_ih[l], (const WT*)n.w_hh[l], n.s_ih[l], n.s_hh[l], n.b_ih[l],
                               n.b_hh[l], ub0, ub1, H, xin, hcur, Hp, nv, hnext);
            team.barrier.wait();
            if (tid == 0) team.parity[l] = 1 - p;  // read by others only after the next barrier
            xin = hnext;
            if (Q8) {  // this layer's recurrent input is consumed: requantise its new state in place
                quantize_all(hnext, nv, Hp, qh[l]);
                qin = &qh[l];
            }
        }
        if (Q8)
            out_q8(n, t0, t1, *qin, nv, team.logits.data());
        else
            matvec<WT>((const WT*)n.w_out, n.s_out, n.b_out, t0, t1, H, xin, Hp, nv, team.logits.data(), n.Qp);
        team.barrier.wait();
        for (int j = 0; j < nv; j++) {  // every thread samples every voice: same data, same result, no barrier
            const int b = b0 + j;
            const int cls = sample_class(&team.logits[(size_t)j * n.Qp], Q, temperature, u[(size_t)b * T + t]);
            last[j] = cls;
            if (tid == 0) out[(size_t)b * T + t] = cls;
            if (P > 0) {
                float* pj = &past[(size_t)j * P];
                const float xs = std::min(1.f, std::max(-1.f, pred[j] + mulaw_decode(cls, Q)));
                std::memmove(pj + 1, pj, (size_t)(P - 1) * sizeof(float));
                pj[0] = xs;
                if (tid == 0) audio[(size_t)b * T + t] = xs;
            }
        }
    }
    team.barrier.wait();
    if (tid == 0) {
        for (int j = 0; j < nv; j++) prev[b0 + j] = last[j];
        if (P > 0) std::memcpy(hist + (size_t)b0 * P, past.data(), (size_t)nv * P * sizeof(float));
        for (int l = 0; l < L; l++)
            for (int j = 0; j < nv; j++)
                std::memcpy(h + ((size_t)l * B + b0 + j) * H, &team.h[team.parity[l]][((size_t)l * nv + j) * Hp], H * 4);
    }
}

// Voices are independent: each thread runs its own voice group with no synchronisation. With `split` and fewer
// voices than threads (one live voice), the threads of a team split every layer's unit blocks and meet at one
// barrier per layer and one before sampling; that needs cores nobody else uses (on a loaded box a descheduled
// team member stalls the others), hence opt-in.
template <typename WT, bool Q8>
static void run_all(const Net& n, int threads, int split, int B, int T, const float* cond, const float* u, float* h,
                    int64_t* prev, float temperature, int64_t* out, int P, const float* lpc, float* hist,
                    float* audio) {
    threads = std::max(1, threads);
    const int nteams = std::min(B, threads);
    std::vector<Team> teams(nteams);
    int b0 = 0;
    for (int i = 0; i < nteams; i++) {
        Team& tm = teams[i];
        tm.b0 = b0;
        tm.nv = B / nteams + (i < B % nteams ? 1 : 0);
        tm.size = split ? std::max(1, std::min(threads / nteams, n.Hp / 16)) : 1;
        tm.barrier.n = tm.size;
        tm.parity.assign(n.L, 0);
        tm.h[0].assign((size_t)n.L * tm.nv * n.Hp, 0.f);
        tm.h[1].assign((size_t)n.L * tm.nv * n.Hp, 0.f);
        tm.logits.assign((size_t)tm.nv * n.Qp, 0.f);
        for (int l = 0; l < n.L; l++)
            for (int j = 0; j < tm.nv; j++)
                std::memcpy(&tm.h[0][((size_t)l * tm.nv + j) * n.Hp], h + ((size_t)l * B + b0 + j) * n.H, n.H * 4);
        b0 += tm.nv;
    }
    std::vector<std::thread> pool;
    for (auto& tm : teams)
        for (int tid = 0; tid < tm.size; tid++) {
            if (&tm == &teams[0] && tid == 0) continue;  // the calling thread takes this one
            pool.emplace_back(run_team<WT, Q8>, std::cref(n), std::ref(tm), tid, B, T, cond, u, h, prev, temperature, out,
                              P, lpc, hist, audio);
        }
    run_team<WT, Q8>(n, teams[0], 0, B, T, cond, u, h, prev, temperature, out, P, lpc, hist, audio);
    for (auto& th : pool) th.join();
}

extern "C" {

int smf_fastgen_abi() { return 5; }

// The best instruction set this CPU gives the int8 net (cpp.py packs the int8 weights for it).
int smf_fastgen_isa() { return best_isa(); }

// Runs T steps for B voices; h [L,B,H] and prev [B] are updated in place; out [B,T] receives the classes.
// P > 0 (a source-filter tier): w_a is [3][H], lpc [B,T,P] the coefficients, hist [B,P] the past samples (updated),
// audio [B,T] receives the samples; P = 0: w_a is [H] and lpc, hist, audio are unused (may be null).
// split: let several threads share one voice group (row split with barriers) when voices < threads.
// isa (int8 only): the layout the int8 weights were packed in; c_* are their 128 * row sums (VNNI only).
int smf_fastgen_run(int prec, int isa, int threads, int split, int H, int L, int C, int Q,
                    const float* w_a, const float* w_c, const float* b_inp,
                    const void* const* w_ih, const float* const* s_ih, const float* const* b_ih,
                    const int32_t* const* c_ih,
                    const void* const* w_hh, const float* const* s_hh, const float* const* b_hh,
                    const int32_t* const* c_hh,
                    const void* w_out, const float* s_out, const float* b_out, const int32_t* c_out,
                    int B, int T, const float* cond, const float* u, float* h, int64_t* prev,
                    float temperature, int64_t* out, int P, const float* lpc, float* hist, float* audio) {
    Net n;
    n.H = H; n.L = L; n.C = C; n.Q = Q;
    n.Hp = (H + 15) / 16 * 16;
    if (Q > TILE * 8) return -2;
    if (isa == ISA_VNNI && best_isa() != ISA_VNNI) return -3;
    n.isa = isa;
    n.Qp = (Q + TILE - 1) / TILE * TILE;
    n.w_a = w_a; n.w_c = w_c; n.b_inp = b_inp;
    n.w_ih = w_ih; n.s_ih = s_ih; n.b_ih = b_ih; n.c_ih = c_ih;
    n.w_hh = w_hh; n.s_hh = s_hh; n.b_hh = b_hh; n.c_hh = c_hh;
    n.w_out = w_out; n.s_out = s_out; n.b_out = b_out; n.c_out = c_out;
    if (P < 0) return -4;
    if (prec == P_FP32) run_all<float, false>(n, threads, split, B, T, cond, u, h, prev, temperature, out, P, lpc, hist, audio);
    else if (prec == P_BF16)
        run_all<uint16_t, false>(n, threads, split, B, T, cond, u, h, prev, temperature, out, P, lpc, hist, audio);
    else if (prec == P_INT8)
        run_all<int8_t, true>(n, threads, split, B, T, cond, u, h, prev, temperature, out, P, lpc, hist, audio);
    else return -1;
    return 0;
}
}
