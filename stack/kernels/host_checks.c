/* GATE-TRACE-002's sampled identity checks on the CPU: a traced forward's product-check projections
 * and every pair's deviation, each in one call for the whole forward.
 *
 * Built and loaded by stack/kernels/host_checks.py, which says why it exists; stack.trace.site_identity
 * says what the checks prove. Elements are float32 or bfloat16 (a bfloat16 is the top half of the
 * float32 of the same value, widened where it is read), every product and difference is taken in
 * float32, and the results are what the torch ops of stack.trace.site_identity give:
 *
 *   gs_projections: for product p, its traced rows y (rows x out) on its k probe rows R (k x out)
 *     and its read rows x (rows x in) on the probes' inputs WtR (k x in) plus their offsets b.r (k):
 *     projected[p][j][i] = R_j . y_i and recomputed[p][j][i] = WtR_j . x_i + b.r_j. Each dot product
 *     sums its float32 products in LANES lanes (element c in lane c % LANES), then the lanes in
 *     order: another rounding than a BLAS product's, of the same size (about width x 2^-24 of
 *     the terms' magnitudes, far inside site_identity_rtol). A row is read once for GROUP probes,
 *     whose sums are independent chains (one probe's sums wait on each other's additions).
 *   gs_deviations: for pair p, traced a and recomputed b of len elements, the DEVIATION row: the
 *     largest |a - b| and the largest |b| over the elements finite on both sides, and 1 where an
 *     element is finite on one side only (the same bits as the torch ops: max and float32
 *     subtraction are exact functions of the values); finite[p] says whether every element of
 *     both was finite.
 *
 * Built with OpenMP, the products are dealt to the threads one at a time (the head's is several
 * times a block's); each is summed by one thread alone, so the results are the same bits however
 * many threads ran.
 *
 * The lanes are GCC's and clang's vector extensions, so one source gives both builds: AVX-512 (one
 * register a vector), chosen when the library loads (__builtin_cpu_supports) as in host_stats.c,
 * and the portable one (SSE on any x86-64). Both do the same arithmetic in the same order, each
 * product and sum rounded on its own (-ffp-contract=off), so they give the same bits.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16

#if defined(__GNUC__) && !defined(__clang__)
/* GCC warns that a 64-byte vector returned by value has another ABI with AVX-512 than without;
 * every function that returns one here is inlined, so no call crosses the two. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* LANES float32s, and LANES 32-bit and 16-bit integers, as GCC's and clang's vector extensions:
 * element-wise arithmetic, one register of the AVX-512 build, four SSE ones of the portable one. */
typedef float Lanes __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t Bits __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint16_t Halves __attribute__((vector_size(LANES * sizeof(uint16_t))));

/* Element i of x: a float32, or a bfloat16 widened to the float32 of the same value. */
static inline __attribute__((always_inline)) float element(const void *x, int bf16, int64_t i) {
    if (!bf16) return ((const float *)x)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)x)[i] << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* Elements i..i+LANES of x, as `element` reads each. */
static inline __attribute__((always_inline)) Lanes lanes_at(const void *x, int bf16, int64_t i) {
    Lanes value;
    if (!bf16) {
        memcpy(&value, (const float *)x + i, sizeof value);
        return value;
    }
    Halves halves;
    memcpy(&halves, (const uint16_t *)x + i, sizeof halves);
    Bits bits = __builtin_convertvector(halves, Bits) << 16;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* The sum of a vector's lanes, in lane order. (Vectors are passed by address: GCC notes that a
 * 64-byte vector passed by value has another ABI with AVX-512 than without.) */
static inline __attribute__((always_inline)) float lane_sum(const Lanes *v) {
    float total = 0.0f;
    for (int l = 0; l < LANES; l++) total += (*v)[l];
    return total;
}

/* r . x over width elements: float32 products summed in LANES lanes (element c in lane c % LANES),
 * then the lanes in order. */
static inline __attribute__((always_inline)) float dot(const float *r, const void *x, int bf16, int64_t width) {
    Lanes sums = {0.0f};
    int64_t body = width - width % LANES;
    for (int64_t c = 0; c < body; c += LANES) sums += lanes_at(r, 0, c) * lanes_at(x, bf16, c);
    for (int64_t c = body; c < width; c++) sums[c - body] += r[c] * element(x, bf16, c);
    return lane_sum(&sums);
}

/* Row x (width elements) on the GROUP probe rows r[0..GROUP) (width apart), each as `dot` sums it:
 * the row's elements are read once for the group, and the group's sums are independent chains. */
#define GROUP 8
static inline __attribute__((always_inline)) void dot_group(const float *r, const void *x, int bf16, int64_t width,
                                                            float *out) {
    Lanes sums[GROUP] = {{0.0f}};
    int64_t body = width - width % LANES;
    for (int64_t c = 0; c < body; c += LANES) {
        Lanes chunk = lanes_at(x, bf16, c);
        for (int j = 0; j < GROUP; j++) sums[j] += lanes_at(r + j * width, 0, c) * chunk;
    }
    for (int j = 0; j < GROUP; j++) {
        for (int64_t c = body; c < width; c++) sums[j][c - body] += r[j * width + c] * element(x, bf16, c);
        out[j] = lane_sum(&sums[j]);
    }
}

/* rows rows of x (width elements each, one after another) on k probe rows r (k x width):
 * out[j * rows + i] = r_j . x_i + offset[j] (no offset when it is NULL); GROUP probes at a time,
 * the rest one by one, each sum the same either way. */
static inline __attribute__((always_inline)) void project_as(const float *r, int64_t k, const void *x, int bf16,
                                                             int64_t rows, int64_t width, const float *offset,
                                                             float *out) {
    size_t size = bf16 ? sizeof(uint16_t) : sizeof(float);
    int64_t grouped = k - k % GROUP;
    for (int64_t i = 0; i < rows; i++) {
        const void *row = (const char *)x + (size_t)(i * width) * size;
        float sums[GROUP];
        for (int64_t j = 0; j < grouped; j += GROUP) {
            dot_group(r + j * width, row, bf16, width, sums);
            for (int g = 0; g < GROUP; g++) out[(j + g) * rows + i] = sums[g];
        }
        for (int64_t j = grouped; j < k; j++) out[j * rows + i] = dot(r + j * width, row, bf16, width);
    }
    if (offset)
        for (int64_t j = 0; j < k; j++)
            for (int64_t i = 0; i < rows; i++) out[j * rows + i] += offset[j];
}

/* project_as with the dtype as a constant. */
static inline __attribute__((always_inline)) void project(const float *r, int64_t k, const void *x, int bf16,
                                                          int64_t rows, int64_t width, const float *offset,
                                                          float *out) {
    if (bf16)
        project_as(r, k, x, 1, rows, width, offset, out);
    else
        project_as(r, k, x, 0, rows, width, offset, out);
}

/* Whether a float32 is finite: its exponent bits are not all set. */
static inline __attribute__((always_inline)) int finite_bits(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & 0x7f800000u) != 0x7f800000u;
}

/* |v| lane by lane: its sign bit cleared. */
static inline __attribute__((always_inline)) Lanes magnitude_of(const Lanes *v) {
    Bits bits;
    memcpy(&bits, v, sizeof bits);
    bits &= 0x7fffffffu;
    Lanes magnitude;
    memcpy(&magnitude, &bits, sizeof magnitude);
    return magnitude;
}

/* *v where *v > *w, else *w, lane by lane (a NaN in v gives w's lane: as `v > w ? v : w` does). */
static inline __attribute__((always_inline)) Lanes larger(const Lanes *v, const Lanes *w) {
    Bits chosen = (Bits)(*v > *w), vb, wb;
    memcpy(&vb, v, sizeof vb);
    memcpy(&wb, w, sizeof wb);
    Bits bits = (vb & chosen) | (wb & ~chosen);
    Lanes result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

/* The DEVIATION of a from b (len elements each) into out[0..3); returns whether every element of
 * both is finite. One pass in lanes assumes they are (x - x is 0 for a finite x, NaN otherwise, so a
 * lane's sum of them says); where one is not, a second pass masks element by element. */
static inline __attribute__((always_inline)) int deviation_of(const void *a, int a_bf16, const void *b, int b_bf16,
                                                              int64_t len, double *out) {
    Lanes worst = {0.0f}, scale = {0.0f}, probe = {0.0f};
    int64_t body = len - len % LANES;
    for (int64_t c = 0; c < body; c += LANES) {
        Lanes x = lanes_at(a, a_bf16, c), y = lanes_at(b, b_bf16, c), difference = x - y;
        Lanes d = magnitude_of(&difference), m = magnitude_of(&y);
        worst = larger(&d, &worst);
        scale = larger(&m, &scale);
        probe += (x - x) + (y - y);
    }
    for (int64_t c = body; c < len; c++) {
        float x = element(a, a_bf16, c), y = element(b, b_bf16, c);
        float d = fabsf(x - y), m = fabsf(y);
        int l = (int)(c - body);
        worst[l] = d > worst[l] ? d : worst[l];
        scale[l] = m > scale[l] ? m : scale[l];
        probe[l] += (x - x) + (y - y);
    }
    float largest = 0.0f, magnitude = 0.0f, nonfinite = 0.0f;
    for (int l = 0; l < LANES; l++) {
        largest = worst[l] > largest ? worst[l] : largest;
        magnitude = scale[l] > magnitude ? scale[l] : magnitude;
        nonfinite += probe[l];
    }
    int unmatched = 0;
    if (nonfinite != 0.0f || !finite_bits(largest)) { /* NaN, or an Inf a difference overflowed to */
        largest = magnitude = 0.0f;
        for (int64_t c = 0; c < len; c++) {
            float x = element(a, a_bf16, c), y = element(b, b_bf16, c);
            int fx = finite_bits(x), fy = finite_bits(y);
            unmatched |= fx != fy;
            if (!(fx && fy)) continue;
            float d = fabsf(x - y), m = fabsf(y);
            largest = d > largest ? d : largest;
            magnitude = m > magnitude ? m : magnitude;
        }
    }
    out[0] = largest;
    out[1] = magnitude;
    out[2] = unmatched;
    return nonfinite == 0.0f;
}

/* deviation_of with the dtypes as constants, so that each of the four loops is compiled for its own. */
static inline __attribute__((always_inline)) int deviation(const void *a, int a_bf16, const void *b, int b_bf16,
                                                           int64_t len, double *out) {
    if (a_bf16) return b_bf16 ? deviation_of(a, 1, b, 1, len, out) : deviation_of(a, 1, b, 0, len, out);
    return b_bf16 ? deviation_of(a, 0, b, 1, len, out) : deviation_of(a, 0, b, 0, len, out);
}

#define PROJECTIONS_BODY                                                                                        \
    _Pragma("omp parallel for schedule(dynamic)")                                                              \
    for (int64_t p = 0; p < n; p++) {                                                                          \
        float *traced = projected + p * k * rows, *read = recomputed + p * k * rows;                           \
        project(outputs[p], k, y[p], y_bf16[p], rows, out_width[p], NULL, traced);                             \
        project(inputs[p], k, x[p], x_bf16[p], rows, in_width[p], offsets[p], read);                           \
    }

#define DEVIATIONS_BODY                                                                                         \
    for (int64_t p = 0; p < n; p++) finite[p] = (int8_t)deviation(a[p], a_bf16[p], b[p], b_bf16[p], len[p], out + 3 * p);

#define PROJECTIONS_ARGS                                                                                        \
    int64_t n, int64_t rows, int64_t k, const void *const *y, const int *y_bf16, const int64_t *out_width,      \
        const float *const *outputs, const void *const *x, const int *x_bf16, const int64_t *in_width,          \
        const float *const *inputs, const float *const *offsets, float *projected, float *recomputed
#define DEVIATIONS_ARGS                                                                                         \
    int64_t n, const void *const *a, const int *a_bf16, const void *const *b, const int *b_bf16,               \
        const int64_t *len, double *out, int8_t *finite

static void projections_portable(PROJECTIONS_ARGS) { PROJECTIONS_BODY }
static void deviations_portable(DEVIATIONS_ARGS) { DEVIATIONS_BODY }
static void (*projections_span)(PROJECTIONS_ARGS) = projections_portable;
static void (*deviations_span)(DEVIATIONS_ARGS) = deviations_portable;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx512f"))) static void projections_avx512(PROJECTIONS_ARGS) { PROJECTIONS_BODY }
__attribute__((target("avx512f"))) static void deviations_avx512(DEVIATIONS_ARGS) { DEVIATIONS_BODY }

__attribute__((constructor)) static void choose_build(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        projections_span = projections_avx512;
        deviations_span = deviations_avx512;
    }
}
#endif

/* The entry points: the build chosen at load, and the portable one (which the tests hold to the same bits). */
void gs_projections(PROJECTIONS_ARGS) {
    projections_span(n, rows, k, y, y_bf16, out_width, outputs, x, x_bf16, in_width, inputs, offsets, projected,
                     recomputed);
}

void gs_projections_portable(PROJECTIONS_ARGS) {
    projections_portable(n, rows, k, y, y_bf16, out_width, outputs, x, x_bf16, in_width, inputs, offsets,
                         projected, recomputed);
}

void gs_deviations(DEVIATIONS_ARGS) { deviations_span(n, a, a_bf16, b, b_bf16, len, out, finite); }

void gs_deviations_portable(DEVIATIONS_ARGS) { deviations_portable(n, a, a_bf16, b, b_bf16, len, out, finite); }

#ifdef _OPENMP
#define THREADING " openmp"
#else
#define THREADING ""
#endif

/* Which build runs, and whether it was built with OpenMP: "avx512 openmp", "portable". */
const char *gs_checks_build(void) {
    return projections_span == projections_portable ? "portable" THREADING : "avx512" THREADING;
}
