/* Image folders, statistics (see imagefolder.h): the one-time pass that
 * decodes every image, sets the broken ones aside, and computes the mean
 * image, per-channel mean and std, and the RGB covariance's eigenvectors and
 * eigenvalues for the PCA lighting (a 3 x 3 Jacobi solver). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "io/imagefolder_impl.h"

/* ---- statistics --------------------------------------------------------- */

/* Eigen-decomposition of a symmetric 3 x 3 matrix by cyclic Jacobi rotations;
 * values sorted largest first, vectors as columns of v. */
static void eig3(const double a_in[9], double val[3], double v[9])
{
    double a[9];
    memcpy(a, a_in, sizeof a);
    for (int i = 0; i < 9; i++) v[i] = i % 4 == 0;
    for (int sweep = 0; sweep < 50; sweep++) {
        double off = a[1] * a[1] + a[2] * a[2] + a[5] * a[5];
        if (off < 1e-30) break;
        for (int p = 0; p < 2; p++)
            for (int q = p + 1; q < 3; q++) {
                double apq = a[3 * p + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[3 * q + q] - a[3 * p + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < 3; k++) { /* a = J^T a J */
                    double akp = a[3 * k + p], akq = a[3 * k + q];
                    a[3 * k + p] = c * akp - s * akq;
                    a[3 * k + q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; k++) {
                    double apk = a[3 * p + k], aqk = a[3 * q + k];
                    a[3 * p + k] = c * apk - s * aqk;
                    a[3 * q + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < 3; k++) {
                    double vkp = v[3 * k + p], vkq = v[3 * k + q];
                    v[3 * k + p] = c * vkp - s * vkq;
                    v[3 * k + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < 3; i++) val[i] = a[4 * i];
    for (int i = 0; i < 3; i++) /* selection sort of the columns */
        for (int j = i + 1; j < 3; j++)
            if (val[j] > val[i]) {
                double t = val[i];
                val[i] = val[j];
                val[j] = t;
                for (int k = 0; k < 3; k++) {
                    t = v[3 * k + i];
                    v[3 * k + i] = v[3 * k + j];
                    v[3 * k + j] = t;
                }
            }
    for (int i = 0; i < 3; i++) { /* a fixed sign: the largest component positive */
        int m = 0;
        for (int k = 1; k < 3; k++)
            if (fabs(v[3 * k + i]) > fabs(v[3 * m + i])) m = k;
        if (v[3 * m + i] < 0)
            for (int k = 0; k < 3; k++) v[3 * k + i] = -v[3 * k + i];
    }
}

typedef struct pass_acc {
    uint64_t sum[3], prod[6]; /* prod: rr rg rb gg gb bb */
    uint64_t *pix;            /* S*S*3 */
    long long images;
} pass_acc;

typedef struct pass_ctx {
    nn_imgf *ds;
    int S;
    atomic_int next;
    char **why;               /* per file: NULL (fine) or the reason */
    bool nomem;
} pass_ctx;

typedef struct pass_arg {
    pass_ctx *c;
    pass_acc acc;
} pass_arg;

static void *pass_worker(void *p)
{
    pass_arg *a = p;
    pass_ctx *c = a->c;
    int S = c->S;
    size_t np = (size_t)S * S;
    uint8_t *img = malloc(np * 3);
    if (!img) {
        c->nomem = true;
        return NULL;
    }
    for (;;) {
        int i = atomic_fetch_add(&c->next, 1);
        if (i >= c->ds->nall) break;
        char *full = imgf_join(c->ds->root, c->ds->all[i].rel);
        nn_status s = full ? nn_imgf_load_center(full, S, img) : NN_E_NOMEM;
        if (s != NN_OK) {
            /* the message starts with the path: keep only the reason */
            const char *m = s == NN_E_NOMEM ? "out of memory" : nn_errmsg();
            size_t len = full ? strlen(full) : 0;
            if (full && strncmp(m, full, len) == 0 && m[len] == ':' && m[len + 1] == ' ') m += len + 2;
            c->why[i] = strdup(m);
            if (!c->why[i]) c->nomem = true;
        }
        free(full);
        if (s != NN_OK) continue;
        uint64_t s0 = 0, s1 = 0, s2 = 0, p00 = 0, p01 = 0, p02 = 0, p11 = 0, p12 = 0, p22 = 0;
        for (size_t k = 0; k < np; k++) {
            uint32_t r = img[3 * k], g = img[3 * k + 1], b = img[3 * k + 2];
            s0 += r, s1 += g, s2 += b;
            p00 += r * r, p01 += r * g, p02 += r * b, p11 += g * g, p12 += g * b, p22 += b * b;
        }
        for (size_t k = 0; k < 3 * np; k++) a->acc.pix[k] += img[k];
        a->acc.sum[0] += s0, a->acc.sum[1] += s1, a->acc.sum[2] += s2;
        a->acc.prod[0] += p00, a->acc.prod[1] += p01, a->acc.prod[2] += p02;
        a->acc.prod[3] += p11, a->acc.prod[4] += p12, a->acc.prod[5] += p22;
        a->acc.images++;
    }
    free(img);
    return NULL;
}

nn_status imgf_stats_pass(nn_imgf *ds, int S, int threads)
{
    size_t np = (size_t)S * S;
    pass_ctx c = {.ds = ds, .S = S};
    atomic_init(&c.next, 0);
    c.why = calloc((size_t)ds->nall + 1, sizeof *c.why);
    int T = threads < ds->nall ? threads : ds->nall > 0 ? ds->nall : 1;
    pass_arg *args = calloc((size_t)T, sizeof *args);
    pthread_t *th = calloc((size_t)T, sizeof *th);
    nn_status s = NN_OK;
    if (!c.why || !args || !th) s = nn_error(NN_E_NOMEM, "%s: out of memory", ds->root);
    for (int t = 0; t < T && s == NN_OK; t++) {
        args[t].c = &c;
        if (!(args[t].acc.pix = calloc(np * 3, sizeof(uint64_t)))) s = nn_error(NN_E_NOMEM, "%s: out of memory", ds->root);
    }
    int started = 0;
    for (; started < T && s == NN_OK; started++)
        if (pthread_create(&th[started], NULL, pass_worker, &args[started]) != 0) break;
    if (s == NN_OK && started == 0) s = nn_error(NN_E_NOMEM, "%s: cannot start a thread", ds->root);
    if (s == NN_OK && started < T) pass_worker(&args[started]); /* finish on this thread */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    if (s == NN_OK && c.nomem) s = nn_error(NN_E_NOMEM, "%s: out of memory checking the images", ds->root);
    if (s == NN_OK) {
        pass_acc tot = {0};
        double *pix = calloc(np * 3, sizeof *pix);
        if (!pix) s = nn_error(NN_E_NOMEM, "%s: out of memory", ds->root);
        for (int t = 0; t < T && s == NN_OK; t++) {
            for (int k = 0; k < 3; k++) tot.sum[k] += args[t].acc.sum[k];
            for (int k = 0; k < 6; k++) tot.prod[k] += args[t].acc.prod[k];
            for (size_t k = 0; k < 3 * np; k++) pix[k] += (double)args[t].acc.pix[k];
            tot.images += args[t].acc.images;
        }
        if (s == NN_OK) {
            double N = (double)tot.images * (double)np, m[3], cov[9], val[3], vec[9];
            for (int k = 0; k < 3; k++) m[k] = N > 0 ? (double)tot.sum[k] / N : 0;
            static const int ij[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};
            for (int k = 0; k < 6; k++) {
                int i = ij[k][0], j = ij[k][1];
                double v = N > 0 ? (double)tot.prod[k] / N - m[i] * m[j] : 0;
                cov[3 * i + j] = cov[3 * j + i] = v / (255.0 * 255.0);
            }
            eig3(cov, val, vec);
            ds->st.images = tot.images;
            for (int k = 0; k < 3; k++) {
                ds->st.mean[k] = (float)m[k];
                double var = cov[4 * k] * 255.0 * 255.0;
                ds->st.std[k] = var > 1e-6 ? (float)sqrt(var) : 1.0f;
                ds->st.eigval[k] = (float)(val[k] > 0 ? val[k] : 0);
            }
            for (int k = 0; k < 9; k++) ds->st.cov[k] = (float)cov[k], ds->st.eigvec[k] = (float)vec[k];
            for (size_t k = 0; k < 3 * np; k++)
                ds->mean_image[k] = tot.images ? (float)(pix[k] / (double)tot.images) : 0.0f;
        }
        free(pix);
    }
    for (int i = 0; i < ds->nall && s == NN_OK; i++)
        if (c.why && c.why[i]) ds->nbad++;
    if (s == NN_OK && ds->nbad && !(ds->bad = calloc((size_t)ds->nbad, sizeof *ds->bad)))
        s = nn_error(NN_E_NOMEM, "%s: out of memory", ds->root);
    for (int i = 0, k = 0; i < ds->nall && c.why; i++) {
        if (c.why[i] && s == NN_OK) {
            ds->bad[k].index = i;
            ds->bad[k++].why = c.why[i];
        } else {
            free(c.why[i]);
        }
    }
    if (s != NN_OK) ds->nbad = 0;
    for (int t = 0; t < T && args; t++) free(args[t].acc.pix);
    free(args);
    free(th);
    free(c.why);
    return s;
}

