// Helium's CPU decode kernels: int8 x int8 and bf16 matmuls, decode attention (engine/model/kernel_build.py builds and
// loads it into a private folder of the cache; engine/model/cpu_kernels.py checks every tensor before it calls in).
//
// The int8 x int8 matmul for decoding on x86 CPUs with VNNI:
//
//   y[m, n] = sx[m] * ws[n] * sum_k xq[m, k] * w[n, k]
//
// w is the int8 weight (N, K) with one scale per row (ws), as engine.model.quant stores it. Each activation row x[m]
// is quantized here to int8 with one scale, sx[m] = max |x[m]| / 127. VNNI's dot product (vpdpbusd) multiplies
// unsigned by signed bytes, so the activations go in as xq + 128 and each row's precomputed sum of weights
// (wsum) takes the 128s back out: sum (xq + 128) w = sum xq w + 128 wsum.
//
// Two paths, picked at run time: AVX512-VNNI (64 bytes a step) and AVX-VNNI (32 bytes, laptops without
// AVX-512). The file builds with plain -O3 (the vector code is per-function targets), so the library loads on
// any x86-64 CPU and helium_vnni_path() says which path, if any, this one can run.
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { PATH_NONE = 0, PATH_AVX256 = 1, PATH_AVX512 = 2 };

static uint64_t xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

static int detect_vnni_path(void);

// 2: AVX512-VNNI with AVX512BW, 1: AVX-VNNI, 0: neither (or the OS does not save the vector registers).
// Asked once: CPUID traps to the hypervisor in a VM, which would cost microseconds per matmul.
int helium_vnni_path(void) {
  static int path = -1;
  if (path < 0) path = detect_vnni_path();
  return path;
}

static int detect_vnni_path(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return PATH_NONE;  // OSXSAVE
  uint64_t xcr = xcr0();
  if ((xcr & 0x6) != 0x6) return PATH_NONE;  // the OS saves XMM and YMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return PATH_NONE;
  int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vnni = (c >> 11) & 1;
  if (avx512f && avx512bw && avx512vnni && (xcr & 0xe0) == 0xe0) return PATH_AVX512;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && avx2 && ((a >> 4) & 1)) return PATH_AVX256;
  return PATH_NONE;
}

// 1 where AVX512-BF16's dot product (vdpbf16ps) runs, else 0.
int helium_has_avx512_bf16(void) {
  static int has = -1;
  unsigned a, b, c, d;
  if (has < 0)  // needs AVX-512 (and the OS saving its registers) too
    has = helium_vnni_path() == PATH_AVX512 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1);
  return has;
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as torch does
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline float load_x(const void* x, int bf16, size_t i) {
  return bf16 ? bf16_to_f32(((const uint16_t*)x)[i]) : ((const float*)x)[i];
}

// xu = round(x / s) + 128 with s = max |x| / 127; returns s (1 for an all-zero row).
static float quantize_row(const void* x, int bf16, size_t offset, int K, uint8_t* xu) {
  float amax = 0.f;
  for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(load_x(x, bf16, offset + k)));
  float s = amax > 0.f ? amax / 127.f : 1.f, inv = 1.f / s;
  for (int k = 0; k < K; k++) xu[k] = (uint8_t)(lrintf(load_x(x, bf16, offset + k) * inv) + 128);
  return s;
}

// Ask for the same 64 bytes of the next four weight rows (rows of `stride` bytes from w): a lone core streams
// weights from memory 1.3-1.5x faster with these hints than on the hardware prefetcher alone (weights too big
// for the caches, /tmp/h11b/pf/cold.py). A prefetch never faults, so running past the last row is harmless.
static inline void prefetch_next4(const void* w, size_t stride, size_t offset) {
  const char* next = (const char*)w + 4 * stride + offset;
  for (int r = 0; r < 4; r++) _mm_prefetch(next + r * stride, _MM_HINT_T0);
}

// The sums of four weight rows against one activation row, 64 bytes a step (the tail masked).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void dot4_512(const uint8_t* xu, const int8_t* w,
                                                                             size_t stride, int K, int32_t out[4]) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  const int8_t *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
  int k = 0;
  for (; k + 64 <= K; k += 64) {
    prefetch_next4(w, stride, k);
    __m512i xv = _mm512_loadu_si512(xu + k);
    a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(w0 + k));
    a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(w1 + k));
    a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(w2 + k));
    a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(w3 + k));
  }
  if (k < K) {
    __mmask64 m = ~0ULL >> (64 - (K - k));
    __m512i xv = _mm512_maskz_loadu_epi8(m, xu + k);
    a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_maskz_loadu_epi8(m, w0 + k));
    a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_maskz_loadu_epi8(m, w1 + k));
    a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_maskz_loadu_epi8(m, w2 + k));
    a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_maskz_loadu_epi8(m, w3 + k));
  }
  out[0] = _mm512_reduce_add_epi32(a0);
  out[1] = _mm512_reduce_add_epi32(a1);
  out[2] = _mm512_reduce_add_epi32(a2);
  out[3] = _mm512_reduce_add_epi32(a3);
}

// HELIUM_NO_AVX_VNNI: built by a compiler that does not know AVX-VNNI (gcc < 11, clang < 12), without that path.
#ifndef HELIUM_NO_AVX_VNNI
int helium_int8_paths_built(void) { return 1 << PATH_AVX256 | 1 << PATH_AVX512; }

__attribute__((target("avx2,avxvnni"))) static inline int32_t hsum256(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// The same, 32 bytes a step; the last K % 32 bytes are summed one by one.
__attribute__((target("avx2,avxvnni"))) static void dot4_256(const uint8_t* xu, const int8_t* w, size_t stride,
                                                             int K, int32_t out[4]) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  const int8_t* r[4] = {w, w + stride, w + 2 * stride, w + 3 * stride};
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    if (!(k & 63)) prefetch_next4(w, stride, k);
    __m256i xv = _mm256_loadu_si256((const __m256i*)(xu + k));
    a0 = _mm256_dpbusd_avx_epi32(a0, xv, _mm256_loadu_si256((const __m256i*)(r[0] + k)));
    a1 = _mm256_dpbusd_avx_epi32(a1, xv, _mm256_loadu_si256((const __m256i*)(r[1] + k)));
    a2 = _mm256_dpbusd_avx_epi32(a2, xv, _mm256_loadu_si256((const __m256i*)(r[2] + k)));
    a3 = _mm256_dpbusd_avx_epi32(a3, xv, _mm256_loadu_si256((const __m256i*)(r[3] + k)));
  }
  out[0] = hsum256(a0);
  out[1] = hsum256(a1);
  out[2] = hsum256(a2);
  out[3] = hsum256(a3);
  for (; k < K; k++)
    for (int i = 0; i < 4; i++) out[i] += (int32_t)xu[k] * r[i][k];
}
#else
int helium_int8_paths_built(void) { return 1 << PATH_AVX512; }

static void dot4_256(const uint8_t* xu, const int8_t* w, size_t stride, int K, int32_t out[4]) {
  (void)xu, (void)w, (void)stride, (void)K;
  out[0] = out[1] = out[2] = out[3] = 0;  // never called: helium_int8_mm refuses this path
}
#endif

typedef struct {
  const uint8_t* xu;  // M rows of K quantized activations
  const float* sx;    // their scales
  int M, K, N;
  const int8_t* w;
  const float* ws;
  const int32_t* wsum;
  void* y;
  int y_bf16;
} Problem;

static void store_y(const Problem* p, size_t i, float v) {
  if (p->y_bf16)
    ((uint16_t*)p->y)[i] = f32_to_bf16(v);
  else
    ((float*)p->y)[i] = v;
}

// Columns [n0, n1) of one matmul's output: problem holds its arguments, path the int8 vector path.
typedef void (*Columns)(const void* problem, int path, int n0, int n1);

// Output columns [0, N) in blocks of four, split evenly over `threads` threads (one: no OpenMP region).
static void run_columns(Columns columns, const void* problem, int path, int N, int threads) {
  int blocks = (N + 3) / 4;
  if (threads > blocks) threads = blocks;
  if (threads <= 1) {
    columns(problem, path, 0, N);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; t++) {
    int b0 = (int)((long)blocks * t / threads), b1 = (int)((long)blocks * (t + 1) / threads);
    columns(problem, path, 4 * b0, 4 * b1 < N ? 4 * b1 : N);
  }
}

// Output columns [n0, n1): each block of four weight rows is read once and used for every activation row.
static void mm_columns(const void* problem, int path, int n0, int n1) {
  const Problem* p = problem;
  const size_t K = (size_t)p->K;
  int32_t d[4];
  for (int n = n0; n < n1; n += 4) {
    int rows = n1 - n < 4 ? n1 - n : 4;  // a last block of 1-3 rows: one row at a time
    const int8_t* w = p->w + (size_t)n * K;
    for (int m = 0; m < p->M; m++) {
      const uint8_t* xu = p->xu + (size_t)m * K;
      if (rows == 4) {
        if (path == PATH_AVX512)
          dot4_512(xu, w, K, p->K, d);
        else
          dot4_256(xu, w, K, p->K, d);
      } else {
        int32_t one[4];
        for (int i = 0; i < rows; i++) {
          if (path == PATH_AVX512)
            dot4_512(xu, w + i * K, 0, p->K, one);
          else
            dot4_256(xu, w + i * K, 0, p->K, one);
          d[i] = one[0];
        }
      }
      for (int i = 0; i < rows; i++)
        store_y(p, (size_t)m * p->N + n + i, p->sx[m] * p->ws[n + i] * (float)(d[i] - 128 * p->wsum[n + i]));
    }
  }
}

// y (M, N) = x (M, K) @ w (N, K)^T as above, in bf16 or float32 (x_bf16, y_bf16), on `threads` threads.
// Returns 0, or -1 when this CPU cannot run `path`.
int helium_int8_mm(int path, const void* x, int x_bf16, int M, int K, const int8_t* w, const float* ws,
                   const int32_t* wsum, int N, void* y, int y_bf16, int threads) {
  if ((path != PATH_AVX512 && path != PATH_AVX256) || !(helium_int8_paths_built() & (1 << path))) return -1;
  if (path > helium_vnni_path()) return -1;
  static __thread uint8_t* xu = NULL;
  static __thread size_t xu_size = 0;
  static __thread float* sx = NULL;
  static __thread int sx_size = 0;
  size_t need = (size_t)M * K;
  if (need > xu_size) {
    uint8_t* grown = realloc(xu, need);
    if (!grown) return -2;
    xu = grown, xu_size = need;
  }
  if (M > sx_size) {
    float* grown = realloc(sx, (size_t)M * sizeof(float));
    if (!grown) return -2;
    sx = grown, sx_size = M;
  }
  for (int m = 0; m < M; m++) sx[m] = quantize_row(x, x_bf16, (size_t)m * K, K, xu + (size_t)m * K);
  Problem p = {xu, sx, M, K, N, w, ws, wsum, y, y_bf16};
  run_columns(mm_columns, &p, path, N, threads);
  return 0;
}

// ---- bf16 x bf16 -> float32 accumulation (AVX512-BF16), for bf16 models' decode steps ----

// The dot products of four bf16 weight rows with one bf16 activation row, 32 values a step (the tail masked).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void dot4_bf16(const uint16_t* x, const uint16_t* w,
                                                                              size_t stride, int K, float out[4]) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const uint16_t *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    prefetch_next4(w, stride * 2, k * 2);  // bytes
    __m512bh xv = (__m512bh)_mm512_loadu_si512(x + k);
    a0 = _mm512_dpbf16_ps(a0, xv, (__m512bh)_mm512_loadu_si512(w0 + k));
    a1 = _mm512_dpbf16_ps(a1, xv, (__m512bh)_mm512_loadu_si512(w1 + k));
    a2 = _mm512_dpbf16_ps(a2, xv, (__m512bh)_mm512_loadu_si512(w2 + k));
    a3 = _mm512_dpbf16_ps(a3, xv, (__m512bh)_mm512_loadu_si512(w3 + k));
  }
  if (k < K) {
    __mmask32 m = ~0u >> (32 - (K - k));
    __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + k);
    a0 = _mm512_dpbf16_ps(a0, xv, (__m512bh)_mm512_maskz_loadu_epi16(m, w0 + k));
    a1 = _mm512_dpbf16_ps(a1, xv, (__m512bh)_mm512_maskz_loadu_epi16(m, w1 + k));
    a2 = _mm512_dpbf16_ps(a2, xv, (__m512bh)_mm512_maskz_loadu_epi16(m, w2 + k));
    a3 = _mm512_dpbf16_ps(a3, xv, (__m512bh)_mm512_maskz_loadu_epi16(m, w3 + k));
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

typedef struct {
  const uint16_t *x, *w;
  uint16_t* y;
  int M, K, N;
} Bf16Problem;

static void bf16_columns(const void* problem, int path, int n0, int n1) {
  const Bf16Problem* p = problem;
  const size_t K = (size_t)p->K;
  (void)path;
  float d[4], one[4];
  for (int n = n0; n < n1; n += 4) {
    int rows = n1 - n < 4 ? n1 - n : 4;
    const uint16_t* w = p->w + (size_t)n * K;
    for (int m = 0; m < p->M; m++) {
      const uint16_t* x = p->x + (size_t)m * K;
      if (rows == 4) {
        dot4_bf16(x, w, K, p->K, d);
      } else {
        for (int i = 0; i < rows; i++) {
          dot4_bf16(x, w + i * K, 0, p->K, one);
          d[i] = one[0];
        }
      }
      for (int i = 0; i < rows; i++) p->y[(size_t)m * p->N + n + i] = f32_to_bf16(d[i]);
    }
  }
}

// y (M, N) = x (M, K) @ w (N, K)^T, all bf16, summed in float32, on `threads` threads.
// Returns 0, or -1 when this CPU has no AVX512-BF16.
int helium_bf16_mm(const uint16_t* x, int M, int K, const uint16_t* w, int N, uint16_t* y, int threads) {
  if (!helium_has_avx512_bf16()) return -1;
  Bf16Problem p = {x, w, y, M, K, N};
  run_columns(bf16_columns, &p, 0, N, threads);
  return 0;
}

// ---- attention of one new position over the KV cache (a decode step) ----

// 8 values of a cache row as float32: bf16 widened, or float32 loaded.
__attribute__((target("avx2,fma"))) static inline __m256 load8(const void* row, int bf16, int d) {
  if (bf16) {
    __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)row + d));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  return _mm256_loadu_ps((const float*)row + d);
}

// Scores, softmax and the weighted sum of values for one query head over the first n cache slots, in float32,
// 8 lanes at a time (D a multiple of 8, at most 512).
__attribute__((target("avx2,fma"))) static void attend_one(const void* q, const void* k, const void* v, void* out,
                                                            int bf16, int n, int D, float scale, float* scores) {
  const size_t item = bf16 ? 2 : 4, row = (size_t)D * item;
  __m256 qv[64], acc[64];
  int lanes = D / 8;
  for (int i = 0; i < lanes; i++) qv[i] = _mm256_mul_ps(load8(q, bf16, 8 * i), _mm256_set1_ps(scale));
  float best = -INFINITY;
  for (int j = 0; j < n; j += 4) {  // four rows at a time: four independent sums (the last rows repeat row n-1)
    const char* kr[4];
    __m256 sum[4];
    for (int r = 0; r < 4; r++) {
      kr[r] = (const char*)k + (size_t)(j + r < n ? j + r : n - 1) * row;
      sum[r] = _mm256_mul_ps(qv[0], load8(kr[r], bf16, 0));
    }
    for (int i = 1; i < lanes; i++)
      for (int r = 0; r < 4; r++) sum[r] = _mm256_fmadd_ps(qv[i], load8(kr[r], bf16, 8 * i), sum[r]);
    // the four horizontal sums at once: (s0 s1 s2 s3) in one vector
    __m256 s01 = _mm256_hadd_ps(sum[0], sum[1]), s23 = _mm256_hadd_ps(sum[2], sum[3]);
    __m256 s = _mm256_hadd_ps(s01, s23);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    float four[4];
    _mm_storeu_ps(four, s4);
    for (int r = 0; r < 4 && j + r < n; r++) {
      scores[j + r] = four[r];
      best = fmaxf(best, four[r]);
    }
  }
  float total = 0.f;
  for (int j = 0; j < n; j++) total += scores[j] = expf(scores[j] - best);
  for (int i = 0; i < lanes; i++) acc[i] = _mm256_setzero_ps();
  for (int j = 0; j < n; j++) {
    const char* vr = (const char*)v + j * row;
    __m256 p = _mm256_set1_ps(scores[j]);
    for (int i = 0; i < lanes; i++) acc[i] = _mm256_fmadd_ps(p, load8(vr, bf16, 8 * i), acc[i]);
  }
  float o[512];
  for (int i = 0; i < lanes; i++) _mm256_storeu_ps(o + 8 * i, _mm256_div_ps(acc[i], _mm256_set1_ps(total)));
  for (int d = 0; d < D; d++) {
    if (bf16)
      ((uint16_t*)out)[d] = f32_to_bf16(o[d]);
    else
      ((float*)out)[d] = o[d];
  }
}

// out (B, H, D) = softmax(q k^T / sqrt(D)) v for q (B, H, D) over the first n of S slots of k, v (B, Hkv, S, D)
// (grouped-query: H / Hkv query heads share a cache head), all bf16 or all float32, contiguous.
// Returns 0, or -1 when this CPU has no AVX2 with FMA, D is not a multiple of 8 up to 512, or n is over 65536
// (scores live on the stack).
int helium_decode_attention(const void* q, const void* k, const void* v, void* out, int bf16, int B, int H, int Hkv,
                            int S, int D, int n, int threads) {
  if (helium_vnni_path() == PATH_NONE || D > 512 || D % 8 || n < 1 || n > S || n > 65536 || H % Hkv) return -1;
  const size_t item = bf16 ? 2 : 4, group = (size_t)(H / Hkv);
  const float scale = 1.f / sqrtf((float)D);
  int heads = B * H;
  if (threads > heads) threads = heads;
#pragma omp parallel num_threads(threads > 1 ? threads : 1)
  {
    float scores[n];
#pragma omp for schedule(static)
    for (int bh = 0; bh < heads; bh++) {
      size_t b = (size_t)bh / H, h = (size_t)bh % H, cache = (b * Hkv + h / group) * (size_t)S * D * item;
      attend_one((const char*)q + (size_t)bh * D * item, (const char*)k + cache, (const char*)v + cache,
                 (char*)out + (size_t)bh * D * item, bf16, n, D, scale, scores);
    }
  }
  return 0;
}
