/* A trace site's statistics on the CPU in one pass over its float32 or bfloat16 elements.
 *
 * Built and loaded by stack/kernels/host_stats.py, which says why it exists. The caller hands a
 * site as `rows` rows of `cols` contiguous floats, `stride` floats apart (a contiguous tensor is
 * one row; a slice of a fused projection is one row per token), and a float64 out[9]: mean, std,
 * min, max, absmax, nan, inf, zero, l1.
 *
 * The elements, in their logical order, are cut into blocks of BLOCK. Within a block the sums run
 * around a shift, the block's first element: s = sum(x - shift), q = sum((x - shift)^2), so the
 * block's squared deviations are q - s^2/n. As the shift is one of the block's own elements, its
 * squared distance from the block's mean is at most those squared deviations, so the subtraction
 * loses at most a factor n + 1 of float64's precision, never the cancellation of a raw sum of
 * squares. Blocks merge by Chan's pairwise update, as in the Triton kernel.
 *
 * Each lane sums in float32 over ROUNDS elements (x - shift is exact for elements within a factor
 * 2 of the shift, and otherwise rounded once, relative to itself), then adds that short sum into
 * float64. A float32 sum of ROUNDS terms is within (ROUNDS - 1) * 2^-24 of their magnitudes (under
 * 1e-6 at 16), far inside GATE-TRACE-002's statistics_rtol, and every longer sum runs in
 * float64. Float32 lanes hold twice the elements of float64 ones and need no conversion per
 * element: the conversions, not the reads, bounded the all-float64 kernel (about 0.28 ns an
 * element on one Sapphire Rapids core against 0.05 for a plain sum).
 *
 * A bfloat16 site is read in its own dtype: each element is widened where it is read (a bfloat16
 * is the top half of the float32 of the same value; sixteen at a time in a register on the
 * AVX-512 path) and summed exactly as a float32 site of the same values is. So a bf16 activation
 * is never copied to float32 before its statistics.
 *
 * Every number is a function of the elements' values and order alone: element i of a block
 * is summed in lane i % LANES, and its float32 sum flushed after lane round i / LANES % ROUNDS,
 * whatever row it sits in (a block that straddles rows of a width that is not a multiple of LANES
 * is copied into one buffer first), and the blocks (shared among OpenMP threads when built with
 * it) merge in order, whichever thread summed each. So the same values give the same bits
 * whatever the tensor's layout and however many threads ran. The block is the threads' unit as
 * well as the merge's, so a slice GATE-TRACE-002 checks (statistics_sample_elements, two blocks)
 * runs the merge of the threads' sums as a whole site does. Both spans multiply and add
 * separately (the library is built with -ffp-contract=off), so they give the same bits too.
 *
 * A NaN or an Inf makes the sums non-finite, and so do finite elements large enough to overflow a
 * float32 sum or square (beyond about 1e19): the statistics are then never counted here, the
 * function returns 1 and the caller computes them another way. It returns 0 with
 * out[5] = out[6] = 0 when every sum is finite, and -1 when it could not allocate its blocks' totals.
 *
 * The AVX-512 span is chosen when the library loads (__builtin_cpu_supports), so one build
 * serves any x86-64 machine; elsewhere the portable span runs. Both compute the same sums.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 8192
#define LANES 16
#define ROUNDS 16

/* One block's partial sums, element i of the block in lane i % LANES, and its shift: float64
 * sums, the float32 ones of the lane rounds since the last flush (`rounds` of them), and the
 * float32 min and max. Keeping the lanes between rows makes a block that straddles rows sum
 * exactly as a contiguous one. */
typedef struct {
    double sum[LANES], squares[LANES], l1[LANES];
    float fsum[LANES], fsquares[LANES], fl1[LANES], low[LANES], high[LANES], shift;
    int rounds;
    int64_t zeros;
} Lanes;

/* The statistics of a run of blocks. */
typedef struct {
    double count, mean, m2, l1;
    float low, high;
    int64_t zeros;
} Totals;

static const Totals EMPTY = {0.0, 0.0, 0.0, 0.0, INFINITY, -INFINITY, 0};

/* Adds len elements of the site's dtype into the lanes, the first to lane 0, read as pieces: the
 * first `first` elements from x, then runs of `cols` elements, each `gap` bytes after the end of
 * the one before (a site's rows). Every piece but the last fills whole lane rounds. One call spans
 * a block however many rows it straddles, so that the AVX-512 span can fetch each next row while it
 * reads one (see there). */
typedef void (*Span)(const char *x, int64_t len, int64_t first, int64_t cols, int64_t gap, Lanes *a);

/* The float32 sums into the float64 ones, lane by lane. */
static void flush(Lanes *l) {
    for (int k = 0; k < LANES; k++) {
        l->sum[k] += (double)l->fsum[k];
        l->squares[k] += (double)l->fsquares[k];
        l->l1[k] += (double)l->fl1[k];
        l->fsum[k] = l->fsquares[k] = l->fl1[k] = 0.0f;
    }
    l->rounds = 0;
}

/* Element i into lane k (i % LANES == k). */
static inline void add(Lanes *l, int k, float v) {
    float d = v - l->shift, dd = d * d;
    l->fsum[k] += d;
    l->fsquares[k] += dd;
    l->fl1[k] += fabsf(v);
    l->zeros += v == 0.0f;
    l->low[k] = v < l->low[k] ? v : l->low[k];
    l->high[k] = v > l->high[k] ? v : l->high[k];
}

/* A float32 as read, and a bfloat16 as the float32 of the same value (its top half). */
static inline float from_f32(float v) { return v; }

static inline float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The portable span of a dtype: element by element, as `add` says. */
#define PORTABLE_SPAN(name, type, value)                                                                        \
    static void name(const char *x, int64_t len, int64_t first, int64_t cols, int64_t gap, Lanes *a) {          \
        Lanes l = *a; /* a local copy: the compiler need not fear that x aliases the lanes */                   \
        int64_t at = 0; /* bytes from x to the piece */                                                         \
        for (int64_t done = 0, take = first; done < len;                                                        \
             done += take, at += take * (int64_t)sizeof(type) + gap, take = cols) {                             \
            take = take < len - done ? take : len - done;                                                       \
            const type *piece = (const type *)(x + at);                                                         \
            int64_t body = take - take % LANES;                                                                 \
            for (int64_t i = 0; i < body; i += LANES) {                                                         \
                for (int k = 0; k < LANES; k++) add(&l, k, value(piece[i + k]));                                \
                if (++l.rounds == ROUNDS) flush(&l);                                                            \
            }                                                                                                   \
            for (int64_t i = body; i < take; i++) add(&l, (int)(i - body), value(piece[i]));                    \
        }                                                                                                       \
        *a = l;                                                                                                 \
    }

PORTABLE_SPAN(span_portable_f32, float, from_f32)
PORTABLE_SPAN(span_portable_bf16, uint16_t, from_bf16)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX512_SPAN 1

/* Sixteen elements a step, lanes 0-15, in float32 (sixteen bfloat16s widened in the register:
 * zero-extended to 32 bits and shifted into the top half); every ROUNDS steps the float32 sums
 * are added into float64 ones (two halves of eight).
 *
 * Each step also asks for the same place in the next two row pieces (prefetches, which change no
 * value). A site sliced from a wider product (a feed-forward's gate and up halves: rows of 4 KiB
 * every 8 KiB in float32) is a stream that jumps a page at every row, where the hardware's
 * prefetcher stops, so each row began with the latency of memory: the gate and up sites of a
 * `small` forward took 0.53 ns an element against 0.20 for the same elements contiguous, and
 * 0.23 with the prefetches (one EPYC core; one row ahead alone, 0.32). */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
span_avx512(const char *x, int64_t len, int64_t first, int64_t cols, int64_t gap, Lanes *a, int bf16) {
    __m512 low = _mm512_loadu_ps(a->low), high = _mm512_loadu_ps(a->high);
    __m512 shift = _mm512_set1_ps(a->shift);
    __m512 fsum = _mm512_loadu_ps(a->fsum), fsq = _mm512_loadu_ps(a->fsquares), fl1 = _mm512_loadu_ps(a->fl1);
    __m512d sum0 = _mm512_loadu_pd(a->sum), sum1 = _mm512_loadu_pd(a->sum + 8);
    __m512d sq0 = _mm512_loadu_pd(a->squares), sq1 = _mm512_loadu_pd(a->squares + 8);
    __m512d l10 = _mm512_loadu_pd(a->l1), l11 = _mm512_loadu_pd(a->l1 + 8);
    int64_t size = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
    int64_t zeros = 0, done = 0, take = first < len ? first : len, body = take - take % LANES;
    int rounds = a->rounds;
    for (;;) {
        int64_t step = take * size + gap; /* bytes from this piece to the next */
        int64_t ahead = len - done - take; /* the elements after this piece */
        for (int64_t i = 0; i < body; i += LANES) {
            __m512 v;
            if (bf16) {
                __m256i halves = _mm256_loadu_si256((const __m256i *)((const uint16_t *)x + i));
                v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
            } else {
                v = _mm512_loadu_ps((const float *)x + i);
            }
            if (i < ahead) _mm_prefetch(x + step + i * size, _MM_HINT_T0);
            if (i + cols < ahead) _mm_prefetch(x + step + cols * size + gap + i * size, _MM_HINT_T1);
            low = _mm512_min_ps(low, v);
            high = _mm512_max_ps(high, v);
            zeros += __builtin_popcount(_mm512_cmpeq_ps_mask(v, _mm512_setzero_ps()));
            __m512 d = _mm512_sub_ps(v, shift);
            fsum = _mm512_add_ps(fsum, d);
            fsq = _mm512_add_ps(fsq, _mm512_mul_ps(d, d));
            fl1 = _mm512_add_ps(fl1, _mm512_abs_ps(v));
            if (++rounds == ROUNDS) {
                sum0 = _mm512_add_pd(sum0, _mm512_cvtps_pd(_mm512_castps512_ps256(fsum)));
                sum1 = _mm512_add_pd(sum1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(fsum, 1)));
                sq0 = _mm512_add_pd(sq0, _mm512_cvtps_pd(_mm512_castps512_ps256(fsq)));
                sq1 = _mm512_add_pd(sq1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(fsq, 1)));
                l10 = _mm512_add_pd(l10, _mm512_cvtps_pd(_mm512_castps512_ps256(fl1)));
                l11 = _mm512_add_pd(l11, _mm512_cvtps_pd(_mm512_extractf32x8_ps(fl1, 1)));
                fsum = fsq = fl1 = _mm512_setzero_ps();
                rounds = 0;
            }
        }
        if (body < take || ahead == 0) break; /* the last piece, with its last take % 16 or none */
        done += take;
        x += step;
        take = cols < ahead ? cols : ahead;
        body = take - take % LANES;
    }
    _mm512_storeu_ps(a->low, low);
    _mm512_storeu_ps(a->high, high);
    _mm512_storeu_ps(a->fsum, fsum);
    _mm512_storeu_ps(a->fsquares, fsq);
    _mm512_storeu_ps(a->fl1, fl1);
    _mm512_storeu_pd(a->sum, sum0);
    _mm512_storeu_pd(a->sum + 8, sum1);
    _mm512_storeu_pd(a->squares, sq0);
    _mm512_storeu_pd(a->squares + 8, sq1);
    _mm512_storeu_pd(a->l1, l10);
    _mm512_storeu_pd(a->l1 + 8, l11);
    a->zeros += zeros;
    a->rounds = rounds;
    if (body < take) { /* the last take % 16, into lanes 0 onwards */
        int64_t rest = take - body;
        if (bf16)
            span_portable_bf16(x + body * size, rest, rest, rest, 0, a);
        else
            span_portable_f32(x + body * size, rest, rest, rest, 0, a);
    }
}

__attribute__((target("avx512f,avx512dq"))) static void span_avx512_f32(const char *x, int64_t len, int64_t first,
                                                                         int64_t cols, int64_t gap, Lanes *a) {
    span_avx512(x, len, first, cols, gap, a, 0);
}

__attribute__((target("avx512f,avx512dq"))) static void span_avx512_bf16(const char *x, int64_t len, int64_t first,
                                                                          int64_t cols, int64_t gap, Lanes *a) {
    span_avx512(x, len, first, cols, gap, a, 1);
}
#endif

/* What reads a site of one dtype: its span and its element's size. */
typedef struct {
    Span span;
    size_t size;
} Reader;

static Reader f32_reader = {span_portable_f32, sizeof(float)};
static Reader bf16_reader = {span_portable_bf16, sizeof(uint16_t)};
static const Reader F32_PORTABLE = {span_portable_f32, sizeof(float)};
static const Reader BF16_PORTABLE = {span_portable_bf16, sizeof(uint16_t)};

__attribute__((constructor)) static void choose_span(void) {
#ifdef HAVE_AVX512_SPAN
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) {
        f32_reader.span = span_avx512_f32;
        bf16_reader.span = span_avx512_bf16;
    }
#endif
}

/* u into t: counts and sums add, the squared deviations by Chan's update. */
static void merge(Totals *t, const Totals *u) {
    double total = t->count + u->count, delta = u->mean - t->mean;
    t->mean += delta * (u->count / total);
    t->m2 += u->m2 + delta * delta * (t->count * u->count / total);
    t->count = total;
    t->l1 += u->l1;
    t->zeros += u->zeros;
    t->low = u->low < t->low ? u->low : t->low;
    t->high = u->high > t->high ? u->high : t->high;
}

/* The block's lanes summed in lane order (the float32 sums flushed first): its count, mean,
 * squared deviations and the rest. */
static Totals finish(Lanes *a, int64_t len) {
    flush(a);
    Totals t = {(double)len, 0.0, 0.0, 0.0, a->low[0], a->high[0], a->zeros};
    double sum = 0.0, squares = 0.0;
    for (int k = 0; k < LANES; k++) {
        sum += a->sum[k];
        squares += a->squares[k];
        t.l1 += a->l1[k];
        t.low = a->low[k] < t.low ? a->low[k] : t.low;
        t.high = a->high[k] > t.high ? a->high[k] : t.high;
    }
    double offset = sum / (double)len, m2 = squares - sum * offset;
    t.mean = (double)a->shift + offset;
    t.m2 = m2 > 0.0 ? m2 : 0.0;
    return t;
}

/* The totals of the block of len elements from element `first` in logical order, spanned in one
 * call, row piece by row piece in its own dtype; every piece but the last must fill whole lane
 * rounds, so with a width that is not a multiple of LANES a block that straddles rows is copied
 * into one buffer first. */
static Totals block_totals(Reader r, const char *data, int64_t cols, int64_t stride, int64_t first, int64_t len) {
    float scratch[BLOCK]; /* room for a block of either dtype */
    int64_t row = first / cols, col = first % cols;
    const char *start = data + (size_t)(row * stride + col) * r.size;
    float shift = r.size == sizeof(float) ? *(const float *)start : from_bf16(*(const uint16_t *)start);
    Lanes a = {.shift = shift};
    for (int k = 0; k < LANES; k++) a.low[k] = a.high[k] = shift;
    if (col + len <= cols || cols % LANES == 0) {
        r.span(start, len, cols - col, cols, (int64_t)((stride - cols) * r.size), &a);
    } else {
        char *into = (char *)scratch;
        for (int64_t done = 0, take; done < len; done += take, row++, col = 0) {
            take = cols - col < len - done ? cols - col : len - done;
            const char *piece = data + (size_t)(row * stride + col) * r.size;
            memcpy(into + (size_t)done * r.size, piece, (size_t)take * r.size);
        }
        r.span(into, len, len, len, 0, &a);
    }
    return finish(&a, len);
}

/* How many elements block k of a site of n elements holds. */
static inline int64_t block_len(int64_t k, int64_t n) { return n - k * BLOCK < BLOCK ? n - k * BLOCK : BLOCK; }

static int stats(Reader r, const void *x, int64_t rows, int64_t cols, int64_t stride, int threads, double *out) {
    int64_t n = rows * cols, blocks = (n + BLOCK - 1) / BLOCK;
    Totals *block = malloc((size_t)blocks * sizeof *block);
    if (block == NULL) return -1;
    if (threads > 1 && blocks > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t k = 0; k < blocks; k++) block[k] = block_totals(r, x, cols, stride, k * BLOCK, block_len(k, n));
    } else { /* on the calling thread, without entering the OpenMP runtime (a few microseconds a site) */
        for (int64_t k = 0; k < blocks; k++) block[k] = block_totals(r, x, cols, stride, k * BLOCK, block_len(k, n));
    }
    Totals t = EMPTY;
    for (int64_t k = 0; k < blocks; k++) merge(&t, &block[k]);
    free(block);
    if (!isfinite(t.l1) || !isfinite(t.m2) || !isfinite(t.mean)) return 1;
    out[0] = t.mean;
    out[1] = sqrt(t.m2 / t.count);
    out[2] = t.low;
    out[3] = t.high;
    out[4] = -(double)t.low > (double)t.high ? -(double)t.low : (double)t.high;
    out[5] = 0.0;
    out[6] = 0.0;
    out[7] = (double)t.zeros;
    out[8] = t.l1;
    return 0;
}

/* Token rows at[0..count) of a site laid out as `rows_of` says (rows of cols elements of `size`
 * bytes, `stride` elements apart), each `width` elements, copied one after another into dst. A
 * width divides cols: a layout row is one token row, or the whole contiguous site. */
static void gs_gather_rows(const char *x, int64_t size, int64_t cols, int64_t stride, const int64_t *at,
                           int64_t count, int64_t width, char *dst) {
    for (int64_t i = 0; i < count; i++) {
        int64_t first = at[i] * width, row = first / cols, col = first % cols;
        memcpy(dst + i * width * size, x + (row * stride + col) * size, (size_t)(width * size));
    }
}

/* The statistics of a site into out, and (count > 0) its token rows at[0..count) gathered into dst
 * as gs_gather_rows does: one call per site from the tracer, which copies the rows its checks read
 * as it reads the statistics. */
#define SITE_STATS(name, type, reader)                                                                         \
    int name(const type *x, int64_t rows, int64_t cols, int64_t stride, int threads, double *out,                \
             const int64_t *at, int64_t count, int64_t width, char *dst) {                                      \
        gs_gather_rows((const char *)x, sizeof(type), cols, stride, at, count, width, dst);                     \
        return stats(reader, x, rows, cols, stride, threads, out);                                              \
    }

SITE_STATS(gs_site_stats_f32, float, f32_reader)
SITE_STATS(gs_site_stats_bf16, uint16_t, bf16_reader)
SITE_STATS(gs_site_stats_f32_portable, float, F32_PORTABLE)
SITE_STATS(gs_site_stats_bf16_portable, uint16_t, BF16_PORTABLE)

/* Which span gs_site_stats_f32 runs, and whether it was built with OpenMP: "avx512 openmp". */
const char *gs_site_stats_build(void) {
#ifdef _OPENMP
#define THREADING " openmp"
#else
#define THREADING ""
#endif
    return f32_reader.span == span_portable_f32 ? "portable" THREADING : "avx512" THREADING;
}
