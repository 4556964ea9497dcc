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
 * runs the merge of the threads' sums as a whole site does. Every span multiplies and adds
 * separately (the library is built with -ffp-contract=off), so they give the same bits too.
 *
 * A NaN or an Inf makes the sums non-finite, and so do finite elements large enough to overflow a
 * float32 sum or square (beyond about 1e19): the statistics are then never counted here, the
 * function returns 1 and the caller computes them another way. It returns 0 with
 * out[5] = out[6] = 0 when every sum is finite, -1 when it could not allocate its blocks' totals,
 * and -2 when asked for spans this CPU does not run.
 *
 * The AVX-512 spans, else the AVX2 ones, are chosen when the library loads (__builtin_cpu_supports),
 * so one build serves any x86-64 machine; elsewhere the portable spans run. All compute the same
 * sums, and a caller may ask for any this CPU runs by name (the tests hold each to the others).
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 8192
#define LANES 16
#define ROUNDS 16
/* How far ahead of the element it reads a span asks for the rest of its piece's stream, in bytes
 * (see span_avx512). */
#define FETCH_AHEAD 8192

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
#define HAVE_X86_SPANS 1

/* Sixteen elements a step, lanes 0-15, in float32 (sixteen bfloat16s widened in the register:
 * zero-extended to 32 bits and shifted into the top half); every ROUNDS steps the float32 sums
 * are added into float64 ones (two halves of eight).
 *
 * Each step also asks for the same place in the next two row pieces (prefetches, which change no
 * value). A site sliced from a wider product (a feed-forward's gate and up halves: rows of 4 KiB
 * every 8 KiB in float32) is a stream that jumps a page at every row, where the hardware's
 * prefetcher stops, so each row began with the latency of memory: the gate and up sites of a
 * `small` forward took 0.53 ns an element against 0.20 for the same elements contiguous, and
 * 0.23 with the prefetches (one EPYC core; one row ahead alone, 0.32).
 *
 * The last piece (the only one of a contiguous site) is asked for FETCH_AHEAD bytes ahead of each
 * step instead, into the next block, which the same thread reads next (a prefetch never faults,
 * so one past the site's last block costs nothing). A site is read just after the operation that
 * wrote it, and the hardware's prefetcher alone did not keep up with a stream of several MB: at
 * GPT-2 small's shape, on one Xeon core (AVX-512 with AMX, 2.6 GHz), a traced forward's
 * statistics took 74 ms in fp32 and 51 under bf16 autocast, and 54 and 41 with it (at `small`,
 * 4.6 and 3.8 ms, and 4.1 to 4.3 and 3.9). */
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
            if (ahead == 0) _mm_prefetch(x + i * size + FETCH_AHEAD, _MM_HINT_T0);
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

/* The AVX2 span, for the x86-64 CPUs without AVX-512 (AMD's before Zen 4, Intel's client cores):
 * the portable span's loop, which compilers leave element by element (0.6 ns an element on one
 * EPYC core without AVX-512, against 0.2-0.3 here), in AVX2 registers of eight float32s, two of
 * them holding the LANES lanes (0-7 and 8-15). Written with GCC's and clang's vector extensions
 * rather than intrinsics; a vector of sixteen would be no register of AVX2's, and GCC keeps such
 * vectors in memory. */
#define HALF (LANES / 2)
typedef float Vector __attribute__((vector_size(HALF * sizeof(float))));
typedef int32_t Mask __attribute__((vector_size(HALF * sizeof(int32_t))));
typedef uint16_t Halves __attribute__((vector_size(HALF * sizeof(uint16_t))));
typedef double Wide __attribute__((vector_size(HALF / 2 * sizeof(double))));
#define AVX2 static inline __attribute__((always_inline, target("avx2")))

/* v where `pick` is all ones, else w, lane by lane. */
AVX2 Vector choose(Mask pick, Vector v, Vector w) { return (Vector)((pick & (Mask)v) | (~pick & (Mask)w)); }

/* Elements i..i+HALF of x, a bfloat16 widened to the float32 of the same value. */
AVX2 Vector vector_at(const char *x, int64_t i, int bf16) {
    Vector v;
    if (!bf16) {
        memcpy(&v, (const float *)x + i, sizeof v);
        return v;
    }
    Halves halves;
    memcpy(&halves, (const uint16_t *)x + i, sizeof halves);
    Mask bits = __builtin_convertvector(halves, Mask) << 16;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* wide[0..2) += the float64s of v's lanes 0-3 and 4-7. */
AVX2 void widen_into(Wide *wide, Vector v) {
    wide[0] += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3), Wide);
    wide[1] += __builtin_convertvector(__builtin_shufflevector(v, v, 4, 5, 6, 7), Wide);
}

/* LANES elements a step, each lane's arithmetic in the order and rounding of `add` (the float32
 * sums added into float64 ones every ROUNDS steps), and the next two row pieces, or the last
 * piece's stream, fetched ahead as the AVX-512 span does (see there why). */
AVX2 void span_avx2(const char *x, int64_t len, int64_t first, int64_t cols, int64_t gap, Lanes *a, int bf16) {
    Vector low[2], high[2], fsum[2], fsq[2], fl1[2], shift = {0.0f};
    Wide sum[4], squares[4], l1[4];
    memcpy(low, a->low, sizeof low);
    memcpy(high, a->high, sizeof high);
    memcpy(fsum, a->fsum, sizeof fsum);
    memcpy(fsq, a->fsquares, sizeof fsq);
    memcpy(fl1, a->fl1, sizeof fl1);
    memcpy(sum, a->sum, sizeof sum);
    memcpy(squares, a->squares, sizeof squares);
    memcpy(l1, a->l1, sizeof l1);
    shift += a->shift;
    Mask zeros = {0};
    int64_t size = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
    int64_t done = 0, take = first < len ? first : len, body = take - take % LANES;
    int rounds = a->rounds;
    for (;;) {
        int64_t step = take * size + gap; /* bytes from this piece to the next */
        int64_t ahead = len - done - take; /* the elements after this piece */
        for (int64_t i = 0; i < body; i += LANES) {
            if (i < ahead) __builtin_prefetch(x + step + i * size, 0, 3);
            if (i + cols < ahead) __builtin_prefetch(x + step + cols * size + gap + i * size, 0, 2);
            if (ahead == 0) __builtin_prefetch(x + i * size + FETCH_AHEAD, 0, 3);
            for (int h = 0; h < 2; h++) {
                Vector v = vector_at(x, i + h * HALF, bf16), d = v - shift;
                low[h] = choose(v < low[h], v, low[h]);
                high[h] = choose(v > high[h], v, high[h]);
                zeros -= v == 0.0f; /* a true comparison is -1 */
                fsum[h] += d;
                fsq[h] += d * d;
                fl1[h] += (Vector)((Mask)v & 0x7fffffff);
            }
            if (++rounds == ROUNDS) {
                for (int h = 0; h < 2; h++) {
                    widen_into(sum + 2 * h, fsum[h]);
                    widen_into(squares + 2 * h, fsq[h]);
                    widen_into(l1 + 2 * h, fl1[h]);
                    fsum[h] = fsq[h] = fl1[h] = (Vector){0.0f};
                }
                rounds = 0;
            }
        }
        if (body < take || ahead == 0) break; /* the last piece, with its last take % LANES or none */
        done += take;
        x += step;
        take = cols < ahead ? cols : ahead;
        body = take - take % LANES;
    }
    memcpy(a->low, low, sizeof low);
    memcpy(a->high, high, sizeof high);
    memcpy(a->fsum, fsum, sizeof fsum);
    memcpy(a->fsquares, fsq, sizeof fsq);
    memcpy(a->fl1, fl1, sizeof fl1);
    memcpy(a->sum, sum, sizeof sum);
    memcpy(a->squares, squares, sizeof squares);
    memcpy(a->l1, l1, sizeof l1);
    for (int k = 0; k < HALF; k++) a->zeros += zeros[k];
    a->rounds = rounds;
    if (body < take) { /* the last take % LANES, into lanes 0 onwards */
        int64_t rest = take - body;
        (bf16 ? span_portable_bf16 : span_portable_f32)(x + body * size, rest, rest, rest, 0, a);
    }
}

__attribute__((target("avx2"))) static void span_avx2_f32(const char *x, int64_t len, int64_t first, int64_t cols,
                                                          int64_t gap, Lanes *a) {
    span_avx2(x, len, first, cols, gap, a, 0);
}

__attribute__((target("avx2"))) static void span_avx2_bf16(const char *x, int64_t len, int64_t first, int64_t cols,
                                                           int64_t gap, Lanes *a) {
    span_avx2(x, len, first, cols, gap, a, 1);
}
#endif

/* What reads a site of one dtype: its span and its element's size. */
typedef struct {
    Span span;
    size_t size;
} Reader;

/* The spans of both dtypes of one instruction set, by the name engine() reports and the tests ask for. */
typedef struct {
    const char *name;
    Span f32, bf16;
} Spans;

/* Best first. */
static const Spans SPANS[] = {
#ifdef HAVE_X86_SPANS
    {"avx512", span_avx512_f32, span_avx512_bf16},
    {"avx2", span_avx2_f32, span_avx2_bf16},
#endif
    {"portable", span_portable_f32, span_portable_bf16},
};
#define SPAN_COUNT (sizeof SPANS / sizeof SPANS[0])

/* The spans named `name` where this CPU runs them, else NULL. */
static const Spans *runnable(const char *name) {
    for (size_t k = 0; k < SPAN_COUNT; k++) {
        if (strcmp(SPANS[k].name, name) != 0) continue;
#ifdef HAVE_X86_SPANS
        __builtin_cpu_init();
        if (strcmp(name, "avx512") == 0 && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")))
            return NULL;
        if (strcmp(name, "avx2") == 0 && !__builtin_cpu_supports("avx2")) return NULL;
#endif
        return &SPANS[k];
    }
    return NULL;
}

#ifdef _OPENMP
#define THREADING " openmp"
#else
#define THREADING ""
#endif

/* The best spans this CPU runs, chosen when the library loads, and their name with the threading. */
static const Spans *best = &SPANS[SPAN_COUNT - 1];
static char build[32];

__attribute__((constructor)) static void choose_spans(void) {
    size_t k = 0;
    while (!runnable(SPANS[k].name)) k++; /* the portable spans, last, always run */
    best = &SPANS[k];
    snprintf(build, sizeof build, "%s%s", best->name, THREADING);
}

/* Whether this CPU runs the spans named `name` (and this build has them): "avx512", "avx2" or
 * "portable". */
int gs_site_stats_runs(const char *name) { return runnable(name) != NULL; }

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
 * as it reads the statistics. `span` names the spans that read it (NULL: the best this CPU runs);
 * -2 when this CPU runs none of that name. */
#define SITE_STATS(name, type, dtype)                                                                          \
    int name(const char *span, const type *x, int64_t rows, int64_t cols, int64_t stride, int threads,          \
             double *out, const int64_t *at, int64_t count, int64_t width, char *dst) {                         \
        const Spans *spans = span == NULL ? best : runnable(span);                                              \
        if (spans == NULL) return -2;                                                                          \
        gs_gather_rows((const char *)x, sizeof(type), cols, stride, at, count, width, dst);                     \
        Reader reader = {spans->dtype, sizeof(type)};                                                          \
        return stats(reader, x, rows, cols, stride, threads, out);                                              \
    }

SITE_STATS(gs_site_stats_f32, float, f32)
SITE_STATS(gs_site_stats_bf16, uint16_t, bf16)

/* Which spans gs_site_stats_f32 runs unless told, and whether the library was built with OpenMP:
 * "avx2 openmp". */
const char *gs_site_stats_build(void) { return build; }
