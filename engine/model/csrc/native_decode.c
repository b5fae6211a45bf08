// Helium's native decode runtime: one call computes a whole decode step of a TinySLM (engine/model/native.py lays
// the weights out once and calls helium_native_step once per token; engine/model/kernel_build.py builds this file,
// which includes cpu_mm.c, so both share its kernels).
//
// For B rows, each at its own position: the token embedding, every layer's RMSNorm, fused qkv, RoPE (adjacent pairs, float32,
// the model's tables), the KV-cache write (slot pos % slots: a ring for sliding windows), grouped-query attention over
// the slots the row has written so far (a row of the cache holds one story; nothing else is masked), the output projection and residual, RMSNorm, SwiGLU and residual, then the final norm and
// the head. The residual stream stays in float32; for bf16 models (bf16_acts) each value is rounded to bf16 where
// PyTorch's bf16 path rounds it, so both paths agree to within a bf16 rounding. Weights: float32, bf16, or int8 with
// one float32 scale per row (engine.model.quant), multiplied as the model's torch modules multiply them (W_INT8 and
// W_INT8W below), on the vector paths and the portable one alike; or Q4_0 int4 (engine.model.quant4) times int8
// activations with one scale per block of 32 (W_Q4, q4_mm.c).
//
// Threads (native_threads.c): one pool for every step; its threads split each matmul's output columns and the
// attention heads into chunks any of them may take, and wait for each other between stages spinning briefly, then
// yielding the core. OpenMP's barriers sleep on a futex under Helium's OMP_WAIT_POLICY=PASSIVE, which made every stage
// pay a wake-up per thread, and its region waits at its end for every thread, however late the OS runs it.
#include "cpu_mm.c"
#include "q4_mm.c"
#include "native_threads.c"

// W_INT8: int8 weights times int8 activations (Helium's VNNI linears); W_INT8W: int8 weights times float activations,
// scaled after the sum (PyTorch's weight-only Int8Linear), so each model computes as its torch path does. W_Q4: Q4_0
// blocks (packed bytes (N, K/2), `scale` pointing at float16 bits (N, K/32)) times int8 activations (q4_mm.c).
enum { W_F32 = 0, W_BF16 = 1, W_INT8 = 2, W_INT8W = 3, W_Q4 = 4 };

typedef struct {
  const void* w;        // (N, K) row-major: float32, bf16 or int8; Q4_0: (N, K/2) packed bytes
  const float* scale;   // int8: one scale per row; Q4_0: float16 bits, one per block of 32
  const int32_t* wsum;  // int8: each row's sum (the VNNI offset)
  int kind, N, K;
} Mat;

typedef struct {
  const float *attn_norm, *mlp_norm;  // (C,) float32
  Mat wqkv, wo, w13, w2;
  void *k_cache, *v_cache;  // (B, Hkv, slots, D) in the cache dtype
} Layer;

typedef struct {
  int n_layer, d_model, n_head, n_kv_head, head_dim, hidden, vocab, slots, max_pos;
  int bf16_acts;   // round activations to bf16 where the torch bf16 path does
  int cache_bf16;  // the KV cache (and attention's q and output) in bf16, else float32
  int scalar;      // the portable C path only (tests; CPUs without the vector units)
  float eps;
  Mat embed, head;
  const float* norm;                  // (C,)
  const float *rope_cos, *rope_sin;   // (max_pos, D / 2)
  Layer* layers;
} Model;

// For engine/model/native.py: the structs' sizes, which its ctypes mirrors must match.
void helium_native_sizes(int out[3]) {
  out[0] = (int)sizeof(Mat), out[1] = (int)sizeof(Layer), out[2] = (int)sizeof(Model);
}

static inline float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }
static inline float act(const Model* m, float v) { return m->bf16_acts ? round_bf16(v) : v; }

// ---- matmuls: columns [n0, n1) of y (M, N) = x (M, K) @ W (N, K)^T ----

typedef struct {  // one activation batch, prepared for a weight's kind
  const float* xf;   // float32 rows
  uint16_t* xb;      // bf16 rows
  uint8_t* xu;       // int8 rows + 128; for Q4_0 weights rows of q8_row_bytes(K) (q4_mm.c)
  float* sx;         // their scales
} Act;

// One thread converts x for w's kind (bf16, or int8 with scales) into the shared buffers; each thread's matmul then
// reads them (and float32 rows from x itself).
static void prepare(const Mat* w, Act* a, const float* x, int M) {
  const size_t K = (size_t)w->K;
  if (w->kind == W_BF16)
    for (size_t i = 0; i < (size_t)M * K; i++) a->xb[i] = f32_to_bf16(x[i]);
  else if (w->kind == W_INT8)
    for (int r = 0; r < M; r++) a->sx[r] = quantize_row(x, 0, r * K, (int)K, a->xu + r * K);
  else if (w->kind == W_Q4)
    for (int r = 0; r < M; r++) q8_blocks(x + r * K, (int)K, a->xu + r * q8_row_bytes((int)K));
}

__attribute__((target("avx512f"))) static void dot4_f32(const float* x, const float* w, size_t stride, int K,
                                                        float out[4]) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const float *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    prefetch_next4(w, stride * 4, k * 4);
    __m512 xv = _mm512_loadu_ps(x + k);
    a0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w0 + k), a0);
    a1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w1 + k), a1);
    a2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w2 + k), a2);
    a3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w3 + k), a3);
  }
  if (k < K) {
    __mmask16 m = (__mmask16)(0xffffu >> (16 - (K - k)));
    __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    a0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w0 + k), a0);
    a1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w1 + k), a1);
    a2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w2 + k), a2);
    a3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w3 + k), a3);
  }
  out[0] = _mm512_reduce_add_ps(a0);
  out[1] = _mm512_reduce_add_ps(a1);
  out[2] = _mm512_reduce_add_ps(a2);
  out[3] = _mm512_reduce_add_ps(a3);
}

// Four int8 weight rows widened to float32 against one float32 activation row (weight-only int8).
__attribute__((target("avx512f"))) static void dot4_i8f32(const float* x, const int8_t* w, size_t stride, int K,
                                                          float out[4]) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    if (!(k & 63)) prefetch_next4(w, stride, k);
    __m512 xv = _mm512_loadu_ps(x + k);
    for (int r = 0; r < 4; r++) {
      __m128i b = _mm_loadu_si128((const __m128i*)(w + r * stride + k));
      acc[r] = _mm512_fmadd_ps(xv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), acc[r]);
    }
  }
  for (int r = 0; r < 4; r++) {
    float s = _mm512_reduce_add_ps(acc[r]);
    for (int j = k; j < K; j++) s += x[j] * (float)w[r * stride + j];
    out[r] = s;
  }
}

// The portable path: one weight row against activation row r.
static float dot_scalar(const Mat* w, const Act* a, int r, int n) {
  const size_t K = (size_t)w->K, row = (size_t)n * K, x = (size_t)r * K;
  if (w->kind == W_INT8) {
    const int8_t* wr = (const int8_t*)w->w + row;
    int32_t d = 0;
    for (size_t k = 0; k < K; k++) d += (int32_t)a->xu[x + k] * wr[k];
    return (float)d;  // the raw integer sum; the caller scales it
  }
  float s = 0.f;
  if (w->kind == W_INT8W) {
    const int8_t* wr = (const int8_t*)w->w + row;
    for (size_t k = 0; k < K; k++) s += a->xf[x + k] * (float)wr[k];
  } else if (w->kind == W_BF16) {
    const uint16_t* wr = (const uint16_t*)w->w + row;
    for (size_t k = 0; k < K; k++) s += bf16_to_f32(a->xb[x + k]) * bf16_to_f32(wr[k]);
  } else {
    const float* wr = (const float*)w->w + row;
    for (size_t k = 0; k < K; k++) s += a->xf[x + k] * wr[k];
  }
  return s;
}

typedef struct {
  int int8_path;  // PATH_AVX512, PATH_AVX256 or PATH_NONE (scalar)
  int bf16, f32;  // AVX512-BF16, AVX-512
} Paths;

static Paths paths(const Model* m) {
  Paths p = {PATH_NONE, 0, 0};
  if (m->scalar) return p;
  p.int8_path = helium_vnni_path();
  if (!(helium_int8_paths_built() & (1 << p.int8_path))) p.int8_path = PATH_NONE;
  p.bf16 = helium_has_avx512_bf16();
  p.f32 = helium_vnni_path() == PATH_AVX512;
  return p;
}

// Q4_0 weight rows n..n+rows-1 (rows <= 4) against activation row r: four at a time on AVX512-VNNI or AVX-VNNI,
// else one by one.
static void q4_dots(const Mat* w, const Act* a, const Paths* p, int r, int n, int rows, float out[4]) {
  const size_t row = (size_t)w->K / 2, blocks = (size_t)w->K / Q4_BLOCK;
  const uint8_t *xq = a->xu + r * q8_row_bytes(w->K), *wr = (const uint8_t*)w->w + n * row;
  const uint16_t* ws = (const uint16_t*)w->scale + n * blocks;
  const int path = p->int8_path;
  if (path == PATH_NONE) {
    for (int i = 0; i < rows; i++) out[i] = q4_dot_scalar(xq, wr + i * row, ws + i * blocks, w->K);
    return;
  }
  for (int i = 0; i < rows; i += rows == 4 ? 4 : 1) {
    const size_t stride = rows == 4 ? row : 0, sstride = rows == 4 ? blocks : 0;
    float one[4];
    if (path == PATH_AVX512)
      q4_dot4_512(xq, wr + i * row, ws + i * blocks, stride, sstride, w->K, rows == 4 ? out : one);
    else
      q4_dot4_256(xq, wr + i * row, ws + i * blocks, stride, sstride, w->K, rows == 4 ? out : one);
    if (rows != 4) out[i] = one[0];
  }
}

// For tests: y (N) = the Q4_0 rows (w, ws) times x (K floats, K a multiple of 32), as a step multiplies them on `path`
// (PATH_AVX512, PATH_AVX256, or PATH_NONE: the portable C). Returns 0; -1 when this CPU or build cannot run that path,
// -2 without memory.
int helium_q4_rows(int path, const float* x, int K, const uint8_t* w, const uint16_t* ws, int N, float* y) {
  if (path != PATH_NONE && (path > helium_vnni_path() || !(helium_int8_paths_built() & (1 << path)))) return -1;
  uint8_t* xq = malloc(q8_row_bytes(K));
  if (!xq) return -2;
  Mat m = {w, (const float*)ws, NULL, W_Q4, N, K};
  Act a = {x, NULL, xq, NULL};
  Paths p = {path, 0, 0};
  prepare(&m, &a, x, 1);
  for (int n = 0; n < N; n += 4) q4_dots(&m, &a, &p, 0, n, N - n < 4 ? N - n : 4, y + n);
  free(xq);
  return 0;
}

// Dot products of weight rows n..n+rows-1 (rows <= 4) with activation row r; int8 sums come back scaled.
static void dots(const Mat* w, const Act* a, const Paths* p, int r, int n, int rows, float out[4]) {
  const size_t K = (size_t)w->K, stride = rows == 4 ? K : 0;
  int32_t d[4];
  if (w->kind == W_Q4) {
    q4_dots(w, a, p, r, n, rows, out);
    return;
  }
  if (w->kind == W_INT8 && p->int8_path != PATH_NONE) {
    const int8_t* wr = (const int8_t*)w->w + (size_t)n * K;
    for (int i = 0; i < rows; i += stride ? 4 : 1) {
      int32_t one[4];
      if (p->int8_path == PATH_AVX512)
        dot4_512(a->xu + r * K, wr + i * K, stride, (int)K, stride ? d : one);
      else
        dot4_256(a->xu + r * K, wr + i * K, stride, (int)K, stride ? d : one);
      if (!stride) d[i] = one[0];
    }
  } else if (w->kind == W_BF16 && p->bf16) {
    const uint16_t* wr = (const uint16_t*)w->w + (size_t)n * K;
    for (int i = 0; i < rows; i += stride ? 4 : 1) {
      float one[4];
      dot4_bf16(a->xb + r * K, wr + i * K, stride, (int)K, stride ? out : one);
      if (!stride) out[i] = one[0];
    }
    return;
  } else if (w->kind == W_F32 && p->f32) {
    const float* wr = (const float*)w->w + (size_t)n * K;
    for (int i = 0; i < rows; i += stride ? 4 : 1) {
      float one[4];
      dot4_f32(a->xf + r * K, wr + i * K, stride, (int)K, stride ? out : one);
      if (!stride) out[i] = one[0];
    }
    return;
  } else if (w->kind == W_INT8W) {
    const int8_t* wr = (const int8_t*)w->w + (size_t)n * K;
    if (p->f32 && stride) {
      dot4_i8f32(a->xf + r * K, wr, stride, (int)K, out);
    } else {
      for (int i = 0; i < rows; i++) {
        float one[4];
        if (p->f32)
          dot4_i8f32(a->xf + r * K, wr + i * K, 0, (int)K, one);
        else
          one[0] = dot_scalar(w, a, r, n + i);
        out[i] = one[0];
      }
    }
    for (int i = 0; i < rows; i++) out[i] *= w->scale[n + i];
    return;
  } else {
    for (int i = 0; i < rows; i++) {
      if (w->kind != W_INT8) {
        out[i] = dot_scalar(w, a, r, n + i);
      } else {
        d[i] = (int32_t)dot_scalar(w, a, r, n + i);
      }
    }
    if (w->kind != W_INT8) return;
  }
  for (int i = 0; i < rows; i++)  // as helium_int8_mm scales them
    out[i] = a->sx[r] * w->scale[n + i] * (float)(d[i] - 128 * w->wsum[n + i]);
}

// y[r, n] (row stride ldy) for columns [n0, n1): the product, or with add the residual y + it.
static void matmul_columns(const Model* m, const Mat* w, const Act* a, const Paths* p, int M, float* y, int ldy,
                           int add, int n0, int n1) {
  float d[4];
  for (int n = n0; n < n1; n += 4) {
    int rows = n1 - n < 4 ? n1 - n : 4;
    for (int r = 0; r < M; r++) {
      dots(w, a, p, r, n, rows, d);
      float* out = y + (size_t)r * ldy + n;
      for (int i = 0; i < rows; i++) out[i] = add ? act(m, out[i] + act(m, d[i])) : act(m, d[i]);
    }
  }
}

// A matmul as one stage: chunks of a few blocks of four columns, about 4 a thread.
static void matmul(Team* team, const Model* m, const Mat* w, Act* a, const float* x, const Paths* p, int M, float* y,
                   int ldy, int add) {
  a->xf = x;
  const int blocks = (w->N + 3) / 4, per = (blocks + 4 * team->nt - 1) / (4 * team->nt);
  FOR_CHUNKS(team, (blocks + per - 1) / per, c) {
    int n1 = 4 * (c + 1) * per;
    matmul_columns(m, w, a, p, M, y, ldy, add, 4 * c * per, n1 < w->N ? n1 : w->N);
  }
  end_stage(team);
}

// ---- the elementwise stages ----

static void rmsnorm(const Model* m, const float* x, const float* weight, float* out, int M) {
  const int C = m->d_model;
  for (int r = 0; r < M; r++) {
    const float* xr = x + (size_t)r * C;
    double ss = 0.;  // near the correctly rounded sum, as PyTorch's cascaded float sum is
    for (int i = 0; i < C; i++) ss += (double)(xr[i] * xr[i]);
    float inv = 1.f / sqrtf((float)ss / (float)C + m->eps);
    for (int i = 0; i < C; i++) out[(size_t)r * C + i] = act(m, xr[i] * inv * weight[i]);
  }
}

static float q4_weight(const Mat* w, int64_t n, size_t k) {
  const uint8_t b = ((const uint8_t*)w->w)[(size_t)n * w->K / 2 + k / 32 * 16 + k % 16];
  const float d = half_to_f32(((const uint16_t*)w->scale)[(size_t)n * w->K / Q4_BLOCK + k / 32]);
  return (float)((k % 32 < 16 ? b & 15 : b >> 4) - 8) * d;
}

static void embed(const Model* m, const int64_t* tokens, float* x, int M) {
  const size_t C = (size_t)m->d_model;
  for (int r = 0; r < M; r++) {
    const size_t row = (size_t)tokens[r] * C;
    for (size_t i = 0; i < C; i++) {
      float v;
      if (m->embed.kind == W_Q4)  // (q - 8) * d, as quant4.dequantize_q4_0
        v = act(m, q4_weight(&m->embed, tokens[r], i));
      else if (m->embed.kind == W_INT8 || m->embed.kind == W_INT8W)
        v = act(m, (float)((const int8_t*)m->embed.w)[row + i] * m->embed.scale[tokens[r]]);
      else if (m->embed.kind == W_BF16)
        v = bf16_to_f32(((const uint16_t*)m->embed.w)[row + i]);
      else
        v = ((const float*)m->embed.w)[row + i];
      x[(size_t)r * C + i] = v;
    }
  }
}

static inline void store(void* base, int bf16, size_t i, float v) {
  if (bf16)
    ((uint16_t*)base)[i] = f32_to_bf16(v);
  else
    ((float*)base)[i] = v;
}

// Rotate head `h` of row r's fused qkv (float32, adjacent pairs) at the row's position pos and store it: query heads into q, key heads
// with their values into the cache slot.
static void rope_and_store(const Model* m, const Layer* L, const float* qkv, void* q, int r, int h, int64_t pos) {
  const int D = m->head_dim, H = m->n_head, Hkv = m->n_kv_head, cb = m->cache_bf16;
  const float *cs = m->rope_cos + (size_t)pos * (D / 2), *sn = m->rope_sin + (size_t)pos * (D / 2);
  const float* row = qkv + (size_t)r * (H + 2 * Hkv) * D;
  const float* src = row + (size_t)h * D;  // query heads, then key heads, then value heads
  void* dst;
  size_t at;
  if (h < H) {
    dst = q, at = ((size_t)r * H + h) * D;
  } else {
    size_t slot = (size_t)pos % m->slots, head = (size_t)r * Hkv + (h - H);
    dst = L->k_cache, at = (head * m->slots + slot) * D;
    const float* v = row + (size_t)(H + Hkv + (h - H)) * D;
    for (int d = 0; d < D; d++) store(L->v_cache, cb, at + d, v[d]);
  }
  for (int i = 0; i < D / 2; i++) {
    float x0 = src[2 * i], x1 = src[2 * i + 1];
    store(dst, cb, at + 2 * i, act(m, x0 * cs[i] - x1 * sn[i]));
    store(dst, cb, at + 2 * i + 1, act(m, x0 * sn[i] + x1 * cs[i]));
  }
}

// The portable attention of one query head over n cache rows (any even D).
static void attend_scalar(const void* q, const void* k, const void* v, void* out, int bf16, int n, int D, float scale,
                          float* scores, float* acc) {
  float best = -INFINITY, total = 0.f;
  for (int j = 0; j < n; j++) {
    float s = 0.f;
    for (int d = 0; d < D; d++) s += load_x(q, bf16, d) * scale * load_x(k, bf16, (size_t)j * D + d);
    scores[j] = s;
    best = fmaxf(best, s);
  }
  for (int j = 0; j < n; j++) total += scores[j] = expf(scores[j] - best);
  for (int d = 0; d < D; d++) acc[d] = 0.f;
  for (int j = 0; j < n; j++)
    for (int d = 0; d < D; d++) acc[d] += scores[j] * load_x(v, bf16, (size_t)j * D + d);
  for (int d = 0; d < D; d++) store(out, bf16, d, acc[d] / total);
}

// Attention of query head rh (row * H + head) over the slots its row has written so far (its position pos).
static void attention(const Model* m, const Layer* L, const void* q, void* att, int rh, int64_t pos, float* scores) {
  const int D = m->head_dim, H = m->n_head, group = H / m->n_kv_head, cb = m->cache_bf16;
  const int n = pos + 1 < m->slots ? (int)pos + 1 : m->slots;
  const size_t item = cb ? 2 : 4;
  const float scale = 1.f / sqrtf((float)D);
  const int vector = !m->scalar && helium_vnni_path() != PATH_NONE && D % 8 == 0 && D <= 512;
  {
    size_t r = (size_t)rh / H, h = (size_t)rh % H;
    size_t cache = ((r * m->n_kv_head + h / group) * m->slots) * D * item;
    const char *qh = (const char*)q + (size_t)rh * D * item, *k = (const char*)L->k_cache + cache;
    const char* v = (const char*)L->v_cache + cache;
    char* out = (char*)att + (size_t)rh * D * item;
    if (vector)
      attend_one(qh, k, v, out, cb, n, D, scale, scores);
    else
      attend_scalar(qh, k, v, out, cb, n, D, scale, scores, scores + m->slots);
  }
}

// ---- the step ----

typedef struct {  // the scratch buffers of one step (helium_native_scratch_bytes says how big)
  float *x, *xn, *qkv, *xa, *h13, *hh, *sx, *scores;
  uint16_t* xb;
  uint8_t* xu;
  void *q, *att;
  atomic_int* counters;
} Work;

static size_t scores_per_thread(const Model* m) { return (size_t)m->slots + (m->head_dim > 512 ? m->head_dim : 512); }

// The stages' counters: embed, 10 a layer, the final norm and the head.
static size_t counter_bytes(const Model* m, int threads) {
  return (size_t)(10 * m->n_layer + 3) * (1 + threads) * LINE * sizeof(atomic_int);
}

static size_t plan(const Model* m, int M, int threads, char* base, Work* w) {
  const size_t C = m->d_model, F = m->hidden, D = m->head_dim, H = m->n_head, Hkv = m->n_kv_head;
  const size_t widest = (C > F ? C : F), qkv = (H + 2 * Hkv) * D;
  const size_t sizes[13] = {
      M * C * 4, M * C * 4, M * qkv * 4, M * C * 4, M * 2 * F * 4, M * F * 4, M * 4,
      (size_t)threads * scores_per_thread(m) * 4, M * widest * 2, M * q8_row_bytes((int)widest), M * H * D * 4,
      M * H * D * 4, counter_bytes(m, threads)};
  void** slots[13] = {(void**)&w->x,   (void**)&w->xn, (void**)&w->qkv, (void**)&w->xa,     (void**)&w->h13,
                      (void**)&w->hh,  (void**)&w->sx, (void**)&w->scores, (void**)&w->xb, (void**)&w->xu,
                      (void**)&w->q,   (void**)&w->att, (void**)&w->counters};
  size_t at = 0;
  for (int i = 0; i < 13; i++) {
    if (base) *slots[i] = base + at;
    at += (sizes[i] + 63) & ~(size_t)63;
  }
  return at;
}

// Bytes of scratch memory a step of M rows on `threads` threads needs.
size_t helium_native_scratch_bytes(const Model* m, int M, int threads) {
  Work w;
  return plan(m, M, threads, NULL, &w);
}

static void layer_step(Team* team, const Model* m, const Layer* L, Work* w, Act* a, const Paths* p, int M,
                       const int64_t* pos) {
  const int C = m->d_model, F = m->hidden, heads = m->n_head + m->n_kv_head, HD = m->n_head * m->head_dim;
  FOR_CHUNKS(team, 1, c) {
    rmsnorm(m, w->x, L->attn_norm, w->xn, M);
    prepare(&L->wqkv, a, w->xn, M);
  }
  end_stage(team);
  matmul(team, m, &L->wqkv, a, w->xn, p, M, w->qkv, L->wqkv.N, 0);
  FOR_CHUNKS(team, M * heads, i) rope_and_store(m, L, w->qkv, w->q, i / heads, i % heads, pos[i / heads]);
  end_stage(team);
  float* scores = w->scores + (size_t)team->t * scores_per_thread(m);
  FOR_CHUNKS(team, M * m->n_head, rh) attention(m, L, w->q, w->att, rh, pos[rh / m->n_head], scores);
  end_stage(team);
  FOR_CHUNKS(team, 1, c) {
    for (size_t i = 0; i < (size_t)M * HD; i++) w->xa[i] = load_x(w->att, m->cache_bf16, i);
    prepare(&L->wo, a, w->xa, M);
  }
  end_stage(team);
  matmul(team, m, &L->wo, a, w->xa, p, M, w->x, C, 1);
  FOR_CHUNKS(team, 1, c) {
    rmsnorm(m, w->x, L->mlp_norm, w->xn, M);
    prepare(&L->w13, a, w->xn, M);
  }
  end_stage(team);
  matmul(team, m, &L->w13, a, w->xn, p, M, w->h13, 2 * F, 0);
  FOR_CHUNKS(team, 1, c) {
    for (int r = 0; r < M; r++)
      for (int i = 0; i < F; i++) {
        float g = w->h13[(size_t)r * 2 * F + i], u = w->h13[(size_t)r * 2 * F + F + i];
        w->hh[(size_t)r * F + i] = act(m, act(m, g / (1.f + expf(-g))) * u);
      }
    prepare(&L->w2, a, w->hh, M);
  }
  end_stage(team);
  matmul(team, m, &L->w2, a, w->hh, p, M, w->x, C, 1);
}

static void token_step(const Model* m, Work* w, const int64_t* tokens, int M, const int64_t* pos, float* logits,
                       int t, int nt) {
  Paths p = paths(m);
  Act a = {NULL, w->xb, w->xu, w->sx};
  Team team = {w->counters, t, nt, 0, 0};
  FOR_CHUNKS(&team, 1, c) embed(m, tokens, w->x, M);
  end_stage(&team);
  for (int l = 0; l < m->n_layer; l++) layer_step(&team, m, &m->layers[l], w, &a, &p, M, pos);
  FOR_CHUNKS(&team, 1, c) {
    rmsnorm(m, w->x, m->norm, w->xn, M);
    prepare(&m->head, &a, w->xn, M);
  }
  end_stage(&team);
  matmul(&team, m, &m->head, &a, w->xn, &p, M, logits, m->vocab, 0);
}

typedef struct {  // one step's arguments, for every thread of the pool
  const Model* m;
  Work* w;
  const int64_t *tokens, *pos;
  int M;
  float* logits;
} Step;

static void step_thread(const void* arg, int t, int nt) {
  const Step* s = arg;
  token_step(s->m, s->w, s->tokens, s->M, s->pos, s->logits, t, nt);
}

// Logits (M, vocab) float32 of tokens (M,), row r at position pos[r] in row r of the KV cache, their keys and values
// written there; scratch holds helium_native_scratch_bytes(m, M, threads) bytes. Returns 0; -1 for a position
// outside the model's tables, -3 for a token outside the vocabulary (nothing is computed then).
int helium_native_step(const Model* m, const int64_t* tokens, int M, const int64_t* pos, float* logits, void* scratch,
                       int threads) {
  if (M < 1) return -1;
  for (int r = 0; r < M; r++) {
    if (pos[r] < 0 || pos[r] >= m->max_pos) return -1;
    if (tokens[r] < 0 || tokens[r] >= m->vocab) return -3;
  }
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  Work w;
  plan(m, M, threads, (char*)scratch, &w);
  memset(w.counters, 0, counter_bytes(m, threads));
  if (threads == 1) {
    token_step(m, &w, tokens, M, pos, logits, 0, 1);
    return 0;
  }
  Step step = {m, &w, tokens, pos, M, logits};
  run_on_pool(step_thread, &step, threads);
  return 0;
}
