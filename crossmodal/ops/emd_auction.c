/* Forward auction with epsilon scaling for the Euclidean assignment problem (Bertsekas).
 *
 * One call solves a whole batch of equal-size clouds; batch items run in parallel when
 * compiled with OpenMP. Person i (a point of x) bids for object j (a point of y), with
 * benefit -|x_i - y_j|. The final eps is tol * (mean nearest-neighbour distance from x to
 * y). An assignment in eps-complementary slack costs at most N * eps above the optimum in
 * total, and that mean nearest-neighbour distance is a lower bound of the optimal mean, so
 * the mean matched distance is within a factor (1 + tol) of the optimum.
 *
 * Speed: a bid scans only the K nearest objects of its person. Prices only rise, so the
 * value of any other object is at most -(K+1-th smallest cost) - (lowest price at the
 * start of the phase); when the second best candidate beats that bound, the scan is exact,
 * otherwise the bid uses the bound (still a valid, smaller bid) or falls back to a full scan.
 * Built by crossmodal/ops/emd_native.py on first use; there is no build step.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define K_CANDIDATES 24

typedef struct { double cost; int64_t j; } entry;

/* Insert (c, j) into the ascending list e[0..len) capped at cap entries; returns the new length. */
static int64_t insert_sorted(entry *e, int64_t len, int64_t cap, double c, int64_t j) {
    if (len == cap && c >= e[cap - 1].cost) return len;
    int64_t pos = len < cap ? len : cap - 1;
    while (pos > 0 && e[pos - 1].cost > c) { e[pos] = e[pos - 1]; pos--; }
    e[pos].cost = c;
    e[pos].j = j;
    return len < cap ? len + 1 : len;
}

static int solve_one(const float *x, const float *y, int64_t n, double tol, int64_t *match) {
    int64_t k = n > K_CANDIDATES + 1 ? K_CANDIDATES : n;
    double *cost = malloc(sizeof(double) * n * n);
    entry *cand = malloc(sizeof(entry) * n * k), *row_tmp = malloc(sizeof(entry) * (k + 1));
    double *beyond = malloc(sizeof(double) * n); /* cost of the nearest non-candidate object */
    double *price = calloc(n, sizeof(double));
    int64_t *owner = malloc(sizeof(int64_t) * n), *queue = malloc(sizeof(int64_t) * n);
    int failed = !cost || !cand || !row_tmp || !beyond || !price || !owner || !queue;

    double nn_sum = 0.0, max_cost = 0.0;
    for (int64_t i = 0; i < n && !failed; i++) {
        for (int64_t j = 0; j < n; j++) {
            /* (x - y)^2 directly: no |x|^2 + |y|^2 - 2xy cancellation far from the origin. */
            double dx = (double)x[3 * i] - y[3 * j], dy = (double)x[3 * i + 1] - y[3 * j + 1],
                   dz = (double)x[3 * i + 2] - y[3 * j + 2];
            double c = sqrt(dx * dx + dy * dy + dz * dz);
            cost[i * n + j] = c;
            if (c > max_cost) max_cost = c;
        }
        /* The k nearest objects, plus one more whose cost bounds every non-candidate. */
        int64_t len = 0, cap = k < n ? k + 1 : k;
        for (int64_t j = 0; j < n; j++) len = insert_sorted(row_tmp, len, cap, cost[i * n + j], j);
        beyond[i] = k < n ? row_tmp[k].cost : INFINITY;
        for (int64_t c = 0; c < k; c++) cand[i * k + c] = row_tmp[c];
        nn_sum += row_tmp[0].cost;
    }
    if (!failed) {
        double eps_final = tol * nn_sum / (double)n;
        if (!(eps_final > 0.0)) eps_final = 1e-12 * (max_cost > 0.0 ? max_cost : 1.0);
        double eps = 0.5 * nn_sum / (double)n;
        if (eps < eps_final) eps = eps_final;
        for (;;) {
            /* Each phase restarts the assignment but keeps the prices of the previous, coarser one. */
            double price_floor = INFINITY;
            for (int64_t j = 0; j < n; j++) {
                owner[j] = -1; match[j] = -1; queue[j] = n - 1 - j;
                if (price[j] < price_floor) price_floor = price[j];
            }
            int64_t queued = n;
            while (queued > 0) {
                int64_t i = queue[--queued];
                double best = -INFINITY, second = -INFINITY;
                int64_t best_j = 0;
                const entry *ci = cand + i * k;
                for (int64_t c = 0; c < k; c++) {
                    double v = -ci[c].cost - price[ci[c].j];
                    if (v > best) { second = best; best = v; best_j = ci[c].j; }
                    else if (v > second) second = v;
                }
                double bound = -beyond[i] - price_floor;
                if (best < bound) {
                    /* A far object may be better: scan the whole row. */
                    const double *row = cost + i * n;
                    best = -INFINITY; second = -INFINITY;
                    for (int64_t j = 0; j < n; j++) {
                        double v = -row[j] - price[j];
                        if (v > best) { second = best; best = v; best_j = j; }
                        else if (v > second) second = v;
                    }
                } else if (second < bound) {
                    second = bound;
                }
                if (n == 1) second = best;
                /* Raise the price until i is indifferent between its two best objects, plus eps. */
                price[best_j] += best - second + eps;
                int64_t previous = owner[best_j];
                if (previous >= 0) { match[previous] = -1; queue[queued++] = previous; }
                owner[best_j] = i;
                match[i] = best_j;
            }
            if (eps <= eps_final) break;
            eps = eps / 8.0 > eps_final ? eps / 8.0 : eps_final;
        }
    }
    free(cost); free(cand); free(row_tmp); free(beyond); free(price); free(owner); free(queue);
    return failed;
}

/* x, y: (batch, n, 3) float32, contiguous; match: (batch, n) int64, the y index of each x point.
 * Returns the number of batch items that could not allocate their work memory. */
int64_t emd_auction_batch(const float *x, const float *y, int64_t batch, int64_t n, double tol,
                          int64_t threads, int64_t *match) {
    int64_t failures = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic) num_threads(threads) reduction(+ : failures)
#endif
    for (int64_t b = 0; b < batch; b++)
        failures += solve_one(x + b * n * 3, y + b * n * 3, n, tol, match + b * n);
    (void)threads;
    return failures;
}
