// Helium's int4 matmul for decoding (native_decode.c includes this after cpu_mm.c): Q4_0 weights
// (engine/model/quant4.py) times int8 activations, one row of activations against four weight rows at a time.
//
// Weights, as quant4.py stores them: per row, blocks of 32 weights, each 16 bytes whose low nibbles are the block's
// first 16 values and high nibbles its last 16 (q in 0..15 standing for q - 8), and one float16 scale per block.
// That layout is already what the kernel wants: 64 bytes are 4 whole blocks, `w & 15` gives the first halves of the
// four blocks and `w >> 4` the second halves. So nothing is repacked at load (the packed bytes and the float16 scales
// are read in place); instead the activations, quantized once per matmul and shared by every weight row, are laid out
// to line up with the nibbles (q8_blocks below).
//
// Activations: int8 with one float32 scale per block of 32, as llama.cpp's Q8_0 (its Q4_0 dot product is Q4_0 x
// Q8_0), not one scale per row as the int8 kernel does. Per block costs one multiply per 4 blocks more than per row,
// which the kernel hides behind its loads, and it keeps one large activation (trained models have outlier channels)
// from coarsening the whole row's steps: int4 weights already spend most of the error budget.
//
//   y[n] = sum_b dw[n, b] * dx[b] * sum_i (q[n, b, i] - 8) * xq[b, i]
//
// VNNI's vpdpbusd multiplies unsigned by signed bytes: q (0..15) goes in unsigned, xq signed, and each block's
// -8 * sum_i xq[b, i] starts its integer sum (so the offset costs nothing in the loop).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { Q4_BLOCK = 32, Q4_GROUP = 128, Q8_GROUP_BYTES = 256 };

// The activations of one row, per group of 4 blocks (128 values), 256 bytes: the 4 blocks' first halves (64 int8),
// their second halves (64 int8), 16 int32 with -8 * each block's sum in lanes 0, 4, 8, 12 (else 0), 16 float32 with
// each block's scale in its 4 lanes. A last group of fewer blocks is padded with zeros (zero scales, zero sums).
static size_t q8_row_bytes(int K) { return (size_t)(K + Q4_GROUP - 1) / Q4_GROUP * Q8_GROUP_BYTES; }

static inline float half_to_f32(uint16_t h) {  // IEEE float16 bits to float32, subnormals included
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
  if (e == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (e) {
    u = sign | ((e + 112) << 23) | (mant << 13);
  } else {
    float f = (float)mant * 0x1p-24f;  // a subnormal (or zero): exact in float32
    memcpy(&u, &f, 4);
    u |= sign;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// One row of K float activations (K a multiple of 32) into the layout above: xq = round(x / d) with d = max |x| / 127
// per block of 32 (rounded half to even, computed as x * (1 / d) in float32); an all-zero block gets d = 0.
static void q8_blocks(const float* x, int K, uint8_t* out) {
  memset(out, 0, q8_row_bytes(K));
  for (int b = 0; b < K / Q4_BLOCK; b++) {
    const float* xb = x + (size_t)b * Q4_BLOCK;
    uint8_t* group = out + (size_t)(b / 4) * Q8_GROUP_BYTES;
    int j = b % 4;
    float amax = 0.f;
    for (int i = 0; i < Q4_BLOCK; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;  // (fmaxf: a call)
    float d = amax / 127.f, inv = amax > 0.f ? 1.f / d : 0.f;
    int32_t sum = 0;
    for (int i = 0; i < Q4_BLOCK; i++) {
      int8_t q = (int8_t)lrintf(xb[i] * inv);
      sum += q;
      group[(i < 16 ? 0 : 64) + 16 * j + i % 16] = (uint8_t)q;
    }
    int32_t corr = -8 * sum;
    memcpy(group + 128 + 16 * j, &corr, 4);
    for (int l = 0; l < 4; l++) memcpy(group + 192 + 16 * j + 4 * l, &d, 4);
  }
}

// Block b of one weight row (its 16 bytes, its float16 scale) against one row of q8_blocks.
static float q4_block_scalar(const uint8_t* xq, int b, const uint8_t* wb, uint16_t scale) {
  const uint8_t* group = xq + (size_t)(b / 4) * Q8_GROUP_BYTES;
  const int8_t *lo = (const int8_t*)group + 16 * (b % 4), *hi = lo + 64;
  int32_t corr, d = 0;
  float dx;
  memcpy(&corr, group + 128 + 16 * (b % 4), 4);
  memcpy(&dx, group + 192 + 16 * (b % 4), 4);
  for (int i = 0; i < 16; i++) d += (wb[i] & 15) * lo[i] + (wb[i] >> 4) * hi[i];
  return (float)(d + corr) * (half_to_f32(scale) * dx);
}

// The portable path: one weight row (packed bytes, float16 scales) against one row of q8_blocks.
static float q4_dot_scalar(const uint8_t* xq, const uint8_t* w, const uint16_t* ws, int K) {
  float s = 0.f;
  for (int b = 0; b < K / Q4_BLOCK; b++) s += q4_block_scalar(xq, b, w + (size_t)b * 16, ws[b]);
  return s;
}

// The four sums of four float32 vectors: the 512 bits halved, then three horizontal adds (a third of the shuffles of
// four _mm512_reduce_add_ps, which cost as much as the dot products of a 512-wide row).
__attribute__((target("avx512f"))) static inline void sum4_512(const __m512 acc[4], float out[4]) {
  __m256 h[4];
  for (int r = 0; r < 4; r++)
    h[r] = _mm256_add_ps(_mm512_castps512_ps256(acc[r]),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r]), 1)));
  __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

// The sums of four weight rows (`stride` bytes apart, their scales `sstride` apart; 0: one row four times) against
// one row of q8_blocks: per 4 blocks one 64-byte load of each row, two vpdpbusd, and in float32 the blocks' scales.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c"))) static void q4_dot4_512(
    const uint8_t* xq, const uint8_t* w, const uint16_t* ws, size_t stride, size_t sstride, int K, float out[4]) {
  const __m512i low4 = _mm512_set1_epi8(15);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);  // block j -> its 4 lanes
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int blocks = K / Q4_BLOCK;
  for (int b = 0; b < blocks; b += 4) {
    const uint8_t* group = xq + (size_t)(b / 4) * Q8_GROUP_BYTES;
    const __m512i xlo = _mm512_loadu_si512(group), xhi = _mm512_loadu_si512(group + 64);
    const __m512i corr = _mm512_loadu_si512(group + 128);
    const __m512 dx = _mm512_loadu_ps(group + 192);
    const int n = blocks - b < 4 ? blocks - b : 4;
    const __mmask64 bytes = n == 4 ? ~0ULL : (1ULL << (16 * n)) - 1;
    const __mmask8 halves = (__mmask8)((1u << n) - 1);
    for (int r = 8; r < 12; r++)  // the same bytes 8 rows on: 1.1-1.2x the speed of 4 rows on (nano's matmuls)
      _mm_prefetch((const char*)w + r * stride + (size_t)b * 16, _MM_HINT_T0);
    for (int r = 0; r < 4; r++) {
      __m512i wv = _mm512_maskz_loadu_epi8(bytes, w + r * stride + (size_t)b * 16);
      __m512i d = _mm512_dpbusd_epi32(corr, _mm512_and_si512(wv, low4), xlo);
      d = _mm512_dpbusd_epi32(d, _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4), xhi);
      __m128 dw = _mm_cvtph_ps(_mm_maskz_loadu_epi16(halves, ws + r * sstride + b));
      __m512 scale = _mm512_mul_ps(_mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dw)), dx);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, acc[r]);
    }
  }
  sum4_512(acc, out);
}

// AVX-VNNI (laptops without AVX-512): the same, 2 blocks (32 bytes) a step; a last group of 1-3 blocks one by one.
#ifndef HELIUM_NO_AVX_VNNI
__attribute__((target("avx2,avxvnni,fma,f16c"))) static void q4_dot4_256(
    const uint8_t* xq, const uint8_t* w, const uint16_t* ws, size_t stride, size_t sstride, int K, float out[4]) {
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m256i spread = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const int blocks = K / Q4_BLOCK, whole = blocks / 4 * 4;
  for (int b = 0; b < whole; b += 4) {
    const uint8_t* group = xq + (size_t)(b / 4) * Q8_GROUP_BYTES;
    for (int r = 8; r < 12; r++) _mm_prefetch((const char*)w + r * stride + (size_t)b * 16, _MM_HINT_T0);
    for (int h = 0; h < 2; h++) {
      const __m256i xlo = _mm256_loadu_si256((const __m256i*)(group + 32 * h));
      const __m256i xhi = _mm256_loadu_si256((const __m256i*)(group + 64 + 32 * h));
      const __m256i corr = _mm256_loadu_si256((const __m256i*)(group + 128 + 32 * h));
      const __m256 dx = _mm256_loadu_ps((const float*)(group + 192 + 32 * h));
      for (int r = 0; r < 4; r++) {
        __m256i wv = _mm256_loadu_si256((const __m256i*)(w + r * stride + (size_t)(b + 2 * h) * 16));
        __m256i d = _mm256_dpbusd_avx_epi32(corr, _mm256_and_si256(wv, low4), xlo);
        d = _mm256_dpbusd_avx_epi32(d, _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4), xhi);
        int32_t two;  // the two blocks' float16 scales
        memcpy(&two, ws + r * sstride + b + 2 * h, 4);
        __m256 dw = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(two)));
        __m256 scale = _mm256_mul_ps(_mm256_permutevar8x32_ps(dw, spread), dx);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, acc[r]);
      }
    }
  }
  __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
  for (int r = 0; r < 4; r++)
    for (int b = whole; b < blocks; b++)
      out[r] += q4_block_scalar(xq, b, w + r * stride + (size_t)b * 16, ws[r * sstride + b]);
}
#else
static void q4_dot4_256(const uint8_t* xq, const uint8_t* w, const uint16_t* ws, size_t stride, size_t sstride, int K,
                        float out[4]) {
  (void)xq, (void)w, (void)ws, (void)stride, (void)sstride, (void)K;
  out[0] = out[1] = out[2] = out[3] = 0.f;  // never called: the native runtime takes no AVX-VNNI path in this build
}
#endif
