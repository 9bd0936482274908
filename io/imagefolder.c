/* Image folders and AlexNet's data pipeline (see imagefolder.h): the folder
 * scan, the one-time checking/statistics pass and its cache, the resize and
 * crop arithmetic on S x S x 3 byte images, and the pool of workers that
 * turns them into (N, 3, C, C) float batches. */
#include "io/imagefolder.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/philox.h"
#include "core/rng.h"
#include "io/jpeg.h"

#define CACHE_MAGIC "CNVIMGF1"
#define AUG_KEY 0x1A6EF01Dull
#define LIGHT_KEY 0x9CA11647ull
#define ORDER_KEY 0xDA7A0DE5ull
#define REPORT_MAX 50 /* broken files named one by one; the rest counted */

typedef struct entry {
    char *rel;       /* path below the split folder: "CLASS/.../name.jpg" */
    int32_t label;
    long long size, mtime_s, mtime_ns;
} entry;

typedef struct bad_file {
    int index;       /* into all[] */
    char *why;
} bad_file;

struct nn_imgf {
    char *root;      /* DIR/SPLIT */
    char **classes;
    int nclasses;
    entry *all;      /* every image-named file, sorted */
    int nall;
    int *ok;         /* indices into all[] of the usable images */
    int nok;
    char **paths;    /* full paths of the usable images */
    bad_file *bad;
    int nbad, ignored;
    nn_imgf_stats st;
    float *mean_image;
};

static int threads_or_cores(int t)
{
    if (t > 0) return t;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static char *join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    size_t k = na;
    if (na && nb && a[na - 1] != '/') p[k++] = '/';
    memcpy(p + k, b, nb + 1);
    return p;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 || strcasecmp(dot, ".png") == 0);
}

/* ---- scanning --------------------------------------------------------- */

typedef struct scan {
    entry *e;
    int n, cap, ignored;
} scan;

/* Sorted names of the entries of dir (hidden ones left out). */
static nn_status list_dir(const char *dir, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return nn_error(NN_E_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *de;
    nn_status s = NN_OK;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) {
                s = nn_error(NN_E_NOMEM, "%s: out of memory listing the folder", dir);
                break;
            }
            *names = nn;
        }
        if (!((*names)[*n] = strdup(de->d_name))) {
            s = nn_error(NN_E_NOMEM, "%s: out of memory listing the folder", dir);
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n > 1) qsort(*names, (size_t)*n, sizeof **names, cmp_str);
    return s;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Adds the image files below root/rel (recursively, in strcmp order). */
static nn_status walk(const char *root, const char *rel, int32_t label, scan *sc, int depth)
{
    if (depth > 32) return nn_error(NN_E_FORMAT, "%s/%s: folders nested too deep (a link loop?)", root, rel);
    char *dir = join(root, rel);
    if (!dir) return nn_error(NN_E_NOMEM, "out of memory scanning %s", root);
    char **names;
    int n;
    nn_status s = list_dir(dir, &names, &n);
    for (int i = 0; i < n && s == NN_OK; i++) {
        char *r = join(rel, names[i]), *full = r ? join(root, r) : NULL;
        struct stat sb;
        if (!full) {
            s = nn_error(NN_E_NOMEM, "out of memory scanning %s", root);
        } else if (stat(full, &sb) != 0) {
            sc->ignored++; /* a dangling link */
        } else if (S_ISDIR(sb.st_mode)) {
            s = walk(root, r, label, sc, depth + 1);
        } else if (!S_ISREG(sb.st_mode) || !image_name(names[i])) {
            sc->ignored++;
        } else {
            if (sc->n == sc->cap) {
                int cap = sc->cap ? 2 * sc->cap : 1024;
                entry *ne = realloc(sc->e, (size_t)cap * sizeof *ne);
                if (!ne) {
                    s = nn_error(NN_E_NOMEM, "out of memory scanning %s", root);
                    free(full);
                    free(r);
                    break;
                }
                sc->e = ne;
                sc->cap = cap;
            }
            entry *e = &sc->e[sc->n++];
            e->rel = r;
            r = NULL;
            e->label = label;
            e->size = (long long)sb.st_size;
            e->mtime_s = (long long)sb.st_mtim.tv_sec;
            e->mtime_ns = (long long)sb.st_mtim.tv_nsec;
        }
        free(full);
        free(r);
    }
    free_names(names, n);
    free(dir);
    return s;
}

/* ---- hashing and the cache ---------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t list_hash(const nn_imgf *ds, int S)
{
    uint64_t h = 0xCBF29CE484222325ull;
    h = fnv(h, CACHE_MAGIC, 8);
    h = fnv(h, &S, sizeof S);
    for (int c = 0; c < ds->nclasses; c++) h = fnv(h, ds->classes[c], strlen(ds->classes[c]) + 1);
    for (int i = 0; i < ds->nall; i++) {
        const entry *e = &ds->all[i];
        h = fnv(h, e->rel, strlen(e->rel) + 1);
        long long v[4] = {e->size, e->mtime_s, e->mtime_ns, e->label};
        h = fnv(h, v, sizeof v);
    }
    return h;
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap, pos;
    bool bad;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->bad) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->bad = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static bool get(buf *b, void *p, size_t n)
{
    if (b->bad || b->pos + n > b->n) return !(b->bad = true);
    memcpy(p, b->p + b->pos, n);
    b->pos += n;
    return true;
}

static char *cache_path(const char *dir, const char *split, int S, const nn_imgf_config *cfg)
{
    char name[256];
    snprintf(name, sizeof name, ".convnet-%s-%d.cache", split && *split ? split : "all", S);
    return join(cfg->cache_dir ? cfg->cache_dir : dir, name);
}

static void cache_write(const nn_imgf *ds, const char *path, uint64_t hash)
{
    int S = ds->st.size;
    buf b = {0};
    put(&b, CACHE_MAGIC, 8);
    put(&b, &hash, sizeof hash);
    put(&b, &S, sizeof S);
    put(&b, &ds->nall, sizeof ds->nall);
    put(&b, &ds->st.images, sizeof ds->st.images);
    put(&b, ds->st.mean, sizeof ds->st.mean);
    put(&b, ds->st.std, sizeof ds->st.std);
    put(&b, ds->st.cov, sizeof ds->st.cov);
    put(&b, ds->st.eigval, sizeof ds->st.eigval);
    put(&b, ds->st.eigvec, sizeof ds->st.eigvec);
    put(&b, ds->mean_image, (size_t)S * S * 3 * sizeof(float));
    put(&b, &ds->nbad, sizeof ds->nbad);
    for (int k = 0; k < ds->nbad; k++) {
        int len = (int)strlen(ds->bad[k].why);
        put(&b, &ds->bad[k].index, sizeof(int));
        put(&b, &len, sizeof len);
        put(&b, ds->bad[k].why, (size_t)len);
    }
    uint64_t sum = fnv(0xCBF29CE484222325ull, b.p, b.n);
    put(&b, &sum, sizeof sum);
    char *tmp = NULL;
    if (!b.bad && (tmp = malloc(strlen(path) + 32))) {
        sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fwrite(b.p, 1, b.n, f) == b.n;
        if (f && fclose(f) != 0) ok = false;
        if (!ok || rename(tmp, path) != 0) remove(tmp);
    }
    free(tmp);
    free(b.p);
}

/* True when path holds a cache for exactly this file list. */
static bool cache_read(nn_imgf *ds, const char *path, uint64_t hash, int S)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    buf b = {0};
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && sb.st_size > 16 && sb.st_size < (1ll << 31)) {
        b.n = (size_t)sb.st_size;
        b.p = malloc(b.n);
        if (!b.p || fread(b.p, 1, b.n, f) != b.n) b.bad = true;
    } else {
        b.bad = true;
    }
    fclose(f);
    uint64_t sum;
    if (b.bad || (memcpy(&sum, b.p + b.n - 8, 8), sum != fnv(0xCBF29CE484222325ull, b.p, b.n - 8))) {
        free(b.p);
        return false;
    }
    b.n -= 8;
    char magic[8];
    uint64_t h;
    int s, nall, nbad = 0;
    bool ok = get(&b, magic, 8) && memcmp(magic, CACHE_MAGIC, 8) == 0 && get(&b, &h, 8) && h == hash &&
              get(&b, &s, sizeof s) && s == S && get(&b, &nall, sizeof nall) && nall == ds->nall &&
              get(&b, &ds->st.images, sizeof ds->st.images) && get(&b, ds->st.mean, sizeof ds->st.mean) &&
              get(&b, ds->st.std, sizeof ds->st.std) && get(&b, ds->st.cov, sizeof ds->st.cov) &&
              get(&b, ds->st.eigval, sizeof ds->st.eigval) && get(&b, ds->st.eigvec, sizeof ds->st.eigvec) &&
              get(&b, ds->mean_image, (size_t)S * S * 3 * sizeof(float)) && get(&b, &nbad, sizeof nbad) &&
              nbad >= 0 && nbad <= nall;
    if (ok && nbad) ok = (ds->bad = calloc((size_t)nbad, sizeof *ds->bad)) != NULL;
    for (int k = 0; ok && k < nbad; k++) {
        int idx = -1, len = 0;
        ok = get(&b, &idx, sizeof idx) && idx >= 0 && idx < nall && get(&b, &len, sizeof len) && len >= 0 &&
             len < 4096 && (ds->bad[k].why = calloc((size_t)len + 1, 1)) != NULL && get(&b, ds->bad[k].why, (size_t)len);
        ds->bad[k].index = idx;
        if (ok) ds->nbad = k + 1;
    }
    free(b.p);
    if (!ok) {
        for (int k = 0; k < nbad && ds->bad; k++) free(ds->bad[k].why);
        free(ds->bad);
        ds->bad = NULL;
        ds->nbad = 0;
    }
    return ok;
}

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
        char *full = join(c->ds->root, c->ds->all[i].rel);
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

static nn_status stats_pass(nn_imgf *ds, int S, int threads)
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

/* ---- opening a split ----------------------------------------------------- */

nn_status nn_imgf_open(nn_imgf **out, const char *dir, const char *split, const char *const *classes, int n,
                       const nn_imgf_config *cfg_in)
{
    *out = NULL;
    nn_imgf_config cfg = cfg_in ? *cfg_in : (nn_imgf_config){0};
    int S = cfg.resize ? cfg.resize : NN_IMGF_RESIZE;
    if (!dir || S < 1 || S > 4096 || (classes && n < 1))
        return nn_error(NN_E_ARG, "image folder: need a folder, 1 <= resize <= 4096 and a class list if given");
    nn_imgf *ds = calloc(1, sizeof *ds);
    if (!ds) return nn_error(NN_E_NOMEM, "image folder: out of memory");
    nn_status s = NN_OK;
    char **sub = NULL;
    int nsub = 0;
    char *cpath = NULL;
    ds->root = join(dir, split ? split : "");
    ds->st.size = S;
    ds->mean_image = calloc((size_t)S * S * 3, sizeof(float));
    if (!ds->root || !ds->mean_image) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    if ((s = list_dir(ds->root, &sub, &nsub)) != NN_OK) goto fail;
    /* class folders: the subfolders */
    int nd = 0;
    for (int i = 0; i < nsub; i++) {
        char *p = join(ds->root, sub[i]);
        struct stat sb;
        bool isdir = p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        free(p);
        if (isdir) sub[nd++] = sub[i];
        else free(sub[i]);
    }
    nsub = nd;
    if (classes) {
        ds->nclasses = n;
        ds->classes = calloc((size_t)n, sizeof *ds->classes);
        for (int i = 0; ds->classes && i < n; i++)
            if (!(ds->classes[i] = strdup(classes[i] ? classes[i] : ""))) {
                s = nn_error(NN_E_NOMEM, "image folder: out of memory");
                goto fail;
            }
    } else {
        ds->nclasses = nsub;
        ds->classes = calloc((size_t)(nsub ? nsub : 1), sizeof *ds->classes);
        for (int i = 0; ds->classes && i < nsub; i++)
            if (!(ds->classes[i] = strdup(sub[i]))) {
                s = nn_error(NN_E_NOMEM, "image folder: out of memory");
                goto fail;
            }
    }
    if (!ds->classes) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    if (nsub == 0) {
        s = nn_error(NN_E_FORMAT, "%s: no class folders (expected %s/CLASS/*.jpg)", ds->root, ds->root);
        goto fail;
    }
    scan sc = {0};
    for (int i = 0; i < nsub && s == NN_OK; i++) {
        int label = -1;
        for (int c = 0; c < ds->nclasses; c++)
            if (strcmp(ds->classes[c], sub[i]) == 0) label = c;
        if (label < 0) {
            s = nn_error(NN_E_FORMAT, "%s: folder '%s' is not one of the model's %d classes", ds->root, sub[i],
                         ds->nclasses);
            break;
        }
        s = walk(ds->root, sub[i], label, &sc, 0);
    }
    ds->all = sc.e;
    ds->nall = sc.n;
    ds->ignored = sc.ignored;
    if (s != NN_OK) goto fail;
    int threads = threads_or_cores(cfg.threads);
    uint64_t hash = list_hash(ds, S);
    cpath = cache_path(dir, split, S, &cfg);
    if (!cpath) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    if (!cache_read(ds, cpath, hash, S)) {
        if (cfg.report)
            fprintf(cfg.report, "%s: checking %d images and computing their statistics (once; cached in %s)\n",
                    ds->root, ds->nall, cpath), fflush(cfg.report);
        if ((s = stats_pass(ds, S, threads)) != NN_OK) goto fail;
        cache_write(ds, cpath, hash);
    }
    ds->ok = malloc((size_t)(ds->nall ? ds->nall : 1) * sizeof *ds->ok);
    ds->paths = calloc((size_t)(ds->nall ? ds->nall : 1), sizeof *ds->paths);
    if (!ds->ok || !ds->paths) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    for (int i = 0, k = 0; i < ds->nall; i++) {
        if (k < ds->nbad && ds->bad[k].index == i) {
            k++;
            continue;
        }
        if (!(ds->paths[ds->nok] = join(ds->root, ds->all[i].rel))) {
            s = nn_error(NN_E_NOMEM, "image folder: out of memory");
            goto fail;
        }
        ds->ok[ds->nok++] = i;
    }
    ds->st.mean_image = ds->mean_image;
    if (cfg.report) {
        for (int k = 0; k < ds->nbad && k < REPORT_MAX; k++)
            fprintf(cfg.report, "  skipping %s/%s: %s\n", ds->root, ds->all[ds->bad[k].index].rel, ds->bad[k].why);
        if (ds->nbad > REPORT_MAX) fprintf(cfg.report, "  ... and %d more\n", ds->nbad - REPORT_MAX);
        fprintf(cfg.report, "%s: %d images in %d classes; %d broken files skipped; %d other files ignored\n",
                ds->root, ds->nok, ds->nclasses, ds->nbad, ds->ignored);
        fflush(cfg.report);
    }
    if (ds->nok == 0) {
        s = nn_error(NN_E_FORMAT, "%s: no readable .jpg/.jpeg/.png images (%d broken)", ds->root, ds->nbad);
        goto fail;
    }
    free_names(sub, nsub);
    free(cpath);
    *out = ds;
    return NN_OK;
fail:
    free_names(sub, nsub);
    free(cpath);
    nn_imgf_free(ds);
    return s;
}

void nn_imgf_free(nn_imgf *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->nclasses && ds->classes; i++) free(ds->classes[i]);
    free(ds->classes);
    for (int i = 0; i < ds->nall; i++) free(ds->all[i].rel);
    free(ds->all);
    for (int i = 0; i < ds->nok; i++) free(ds->paths[i]);
    free(ds->paths);
    free(ds->ok);
    for (int k = 0; k < ds->nbad; k++) free(ds->bad[k].why);
    free(ds->bad);
    free(ds->mean_image);
    free(ds->root);
    free(ds);
}

int nn_imgf_count(const nn_imgf *ds) { return ds->nok; }
int nn_imgf_skipped(const nn_imgf *ds) { return ds->nbad; }
int nn_imgf_ignored(const nn_imgf *ds) { return ds->ignored; }
int nn_imgf_classes(const nn_imgf *ds) { return ds->nclasses; }
const char *const *nn_imgf_class_names(const nn_imgf *ds) { return (const char *const *)ds->classes; }
const char *nn_imgf_path(const nn_imgf *ds, int i) { return i >= 0 && i < ds->nok ? ds->paths[i] : NULL; }
int32_t nn_imgf_label(const nn_imgf *ds, int i) { return i >= 0 && i < ds->nok ? ds->all[ds->ok[i]].label : -1; }
const nn_imgf_stats *nn_imgf_get_stats(const nn_imgf *ds) { return &ds->st; }

const char *nn_imgf_skipped_path(const nn_imgf *ds, int k, const char **why)
{
    if (k < 0 || k >= ds->nbad) return NULL;
    if (why) *why = ds->bad[k].why;
    return ds->all[ds->bad[k].index].rel;
}

/* ---- single images -------------------------------------------------------- */

nn_status nn_imgf_decode(const char *path, int min_side, nn_image *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t head[8] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got == 0) return nn_error(NN_E_FORMAT, "%s: empty file", path);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (got >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return nn_jpeg_read(path, min_side, out);
    if (got == 8 && memcmp(head, png_sig, 8) == 0) {
        /* gray, palette and 16-bit become 8-bit RGB; alpha is dropped */
        NN_TRY(nn_png_read(path, 3, out));
        return NN_OK;
    }
    return nn_error(NN_E_FORMAT, "%s: not a JPEG or PNG image", path);
}

/* One axis of the resampling: output pixel j (0 <= j < S) of the center crop
 * is sum_k w[j * maxn + k] * src[first[j] + k], k < cnt[j]. */
typedef struct axis {
    int *first, *cnt, maxn;
    float *w;
} axis;

static void axis_free(axis *a)
{
    free(a->first);
    free(a->cnt);
    free(a->w);
}

/* n source pixels -> L resized pixels, of which [off, off + S) are kept. */
static bool axis_make(axis *a, int n, int L, int off, int S)
{
    double f = (double)n / (double)L; /* source pixels per resized pixel */
    a->maxn = f >= 1 ? (int)ceil(f) + 2 : 2;
    a->first = malloc((size_t)S * sizeof(int));
    a->cnt = malloc((size_t)S * sizeof(int));
    a->w = calloc((size_t)S * a->maxn, sizeof(float));
    if (!a->first || !a->cnt || !a->w) return false;
    for (int j = 0; j < S; j++) {
        float *w = a->w + (size_t)j * a->maxn;
        if (f >= 1) { /* area: coverage of [lo, hi) */
            double lo = (double)(off + j) * f, hi = (double)(off + j + 1) * f;
            int k0 = (int)floor(lo), k1 = (int)ceil(hi);
            if (k1 > n) k1 = n;
            if (k0 > k1 - 1) k0 = k1 - 1;
            a->first[j] = k0;
            a->cnt[j] = k1 - k0;
            double tot = 0;
            for (int k = k0; k < k1; k++) {
                double c = fmin(hi, k + 1.0) - fmax(lo, (double)k);
                w[k - k0] = (float)(c > 0 ? c : 0);
                tot += c > 0 ? c : 0;
            }
            for (int k = 0; k < k1 - k0; k++) w[k] = tot > 0 ? (float)(w[k] / tot) : 1.0f / (float)(k1 - k0);
        } else { /* bilinear, half-pixel centers */
            double c = ((double)(off + j) + 0.5) * f - 0.5;
            if (c < 0) c = 0;
            if (c > n - 1) c = n - 1;
            int k0 = (int)c;
            double t = c - k0;
            a->first[j] = k0;
            if (k0 + 1 < n && t > 0) {
                a->cnt[j] = 2;
                w[0] = (float)(1 - t);
                w[1] = (float)t;
            } else {
                a->cnt[j] = 1;
                w[0] = 1;
            }
        }
    }
    return true;
}

/* The resized size of the long side and the crop offsets. */
static void geometry(int w, int h, int S, int *Lw, int *Lh)
{
    if (w <= h) {
        *Lw = S;
        *Lh = (int)floor((double)h * S / w + 0.5);
    } else {
        *Lh = S;
        *Lw = (int)floor((double)w * S / h + 0.5);
    }
    if (*Lw < S) *Lw = S;
    if (*Lh < S) *Lh = S;
}

static bool resize_center(const uint8_t *rgb, int w, int h, int S, uint8_t *out)
{
    int Lw, Lh;
    geometry(w, h, S, &Lw, &Lh);
    axis ax = {0}, ay = {0};
    float *tmp = NULL;
    bool ok = axis_make(&ax, w, Lw, (Lw - S) / 2, S) && axis_make(&ay, h, Lh, (Lh - S) / 2, S);
    int y0 = ok ? ay.first[0] : 0, y1 = ok ? ay.first[S - 1] + ay.cnt[S - 1] : 0; /* source rows used */
    if (ok) ok = (tmp = malloc((size_t)(y1 - y0 + 1) * S * 3 * sizeof(float))) != NULL;
    if (ok) {
        for (int y = y0; y < y1; y++) { /* horizontal pass over the rows used */
            const uint8_t *src = rgb + (size_t)y * w * 3;
            float *t = tmp + (size_t)(y - y0) * S * 3;
            for (int j = 0; j < S; j++) {
                const float *wt = ax.w + (size_t)j * ax.maxn;
                const uint8_t *s = src + (size_t)ax.first[j] * 3;
                float r = 0, g = 0, b = 0;
                for (int k = 0; k < ax.cnt[j]; k++) {
                    r += wt[k] * s[3 * k];
                    g += wt[k] * s[3 * k + 1];
                    b += wt[k] * s[3 * k + 2];
                }
                t[3 * j] = r, t[3 * j + 1] = g, t[3 * j + 2] = b;
            }
        }
        float *acc = tmp + (size_t)(y1 - y0) * S * 3; /* one output row */
        for (int i = 0; i < S; i++) { /* vertical pass, row by row so it vectorizes */
            const float *wt = ay.w + (size_t)i * ay.maxn;
            for (int j = 0; j < 3 * S; j++) acc[j] = 0.5f; /* rounds on truncation */
            for (int k = 0; k < ay.cnt[i]; k++) {
                const float *t = tmp + (size_t)(ay.first[i] - y0 + k) * S * 3;
                float wk = wt[k];
                for (int j = 0; j < 3 * S; j++) acc[j] += wk * t[j];
            }
            uint8_t *o = out + (size_t)i * S * 3;
            for (int j = 0; j < 3 * S; j++) o[j] = (uint8_t)(acc[j] < 0 ? 0 : acc[j] > 255 ? 255 : acc[j]);
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return ok;
}

void nn_imgf_resize_center(const uint8_t *rgb, int w, int h, int S, uint8_t *out)
{
    if (!resize_center(rgb, w, h, S, out)) memset(out, 0, (size_t)S * S * 3);
}

nn_status nn_imgf_load_center(const char *path, int S, uint8_t *out)
{
    nn_image im;
    NN_TRY(nn_imgf_decode(path, S, &im));
    bool ok = resize_center(im.data, im.w, im.h, S, out);
    nn_image_free(&im);
    return ok ? NN_OK : nn_error(NN_E_NOMEM, "%s: out of memory resizing", path);
}

nn_imgf_aug nn_imgf_draw(uint64_t seed, int epoch, int pos, int S, int C, bool flip, float lighting_std)
{
    nn_imgf_aug a = {0};
    uint64_t ctr = ((uint64_t)(uint32_t)epoch << 32) | (uint32_t)pos;
    nn_philox_out r = nn_philox(ctr, seed ^ AUG_KEY);
    uint32_t span = S > C ? (uint32_t)(S - C + 1) : 1;
    a.x = (int)(r.v[0] % span);
    a.y = (int)(r.v[1] % span);
    a.flip = flip && (r.v[2] & 1);
    if (lighting_std > 0)
        for (int i = 0; i < 3; i++) a.alpha[i] = lighting_std * nn_rand_normal(seed ^ LIGHT_KEY, ctr * 4, (uint64_t)i);
    return a;
}

nn_imgf_aug nn_imgf_view(int v, int S, int C)
{
    nn_imgf_aug a = {0};
    int m = S - C, k = v % 5;
    a.y = k == 0 || k == 1 ? 0 : k == 4 ? m / 2 : m;
    a.x = k == 0 || k == 2 ? 0 : k == 4 ? m / 2 : m;
    a.flip = v >= 5;
    return a;
}

void nn_imgf_apply(const uint8_t *img, int S, int C, const nn_imgf_aug *a, const nn_imgf_stats *st,
                   const nn_imgf_norm *norm, float *out)
{
    float shift[3] = {0, 0, 0}, scale[3] = {1, 1, 1};
    nn_imgf_mean mode = norm ? norm->mean : NN_IMGF_MEAN_NONE;
    if (norm)
        for (int c = 0; c < 3; c++) scale[c] = norm->scale[c];
    if (st)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 3; i++) shift[c] += 255.0f * st->eigvec[3 * c + i] * a->alpha[i] * st->eigval[i];
    if (!st || (mode == NN_IMGF_MEAN_PIXEL && !st->mean_image)) mode = NN_IMGF_MEAN_NONE;
    /* per channel: out = (p + add[c] - mean_pixel) * scale[c] */
    float add[3];
    for (int c = 0; c < 3; c++) add[c] = shift[c] - (mode == NN_IMGF_MEAN_CHANNEL ? st->mean[c] : 0.0f);
    size_t CC = (size_t)C * C;
    for (int i = 0; i < C; i++) {
        size_t off = ((size_t)(a->y + i) * S + (size_t)a->x) * 3;
        const uint8_t *src = img + off;
        const float *mp = mode == NN_IMGF_MEAN_PIXEL ? st->mean_image + off : NULL;
        float *o0 = out + (size_t)i * C, *o1 = o0 + CC, *o2 = o1 + CC;
        for (int j = 0; j < C; j++) {
            int q = 3 * (a->flip ? C - 1 - j : j);
            float m0 = mp ? mp[q] : 0.0f, m1 = mp ? mp[q + 1] : 0.0f, m2 = mp ? mp[q + 2] : 0.0f;
            o0[j] = ((float)src[q] + add[0] - m0) * scale[0];
            o1[j] = ((float)src[q + 1] + add[1] - m1) * scale[1];
            o2[j] = ((float)src[q + 2] + add[2] - m2) * scale[2];
        }
    }
}

/* ---- the loader -------------------------------------------------------------
 * Samples are the unit of work: workers take positions in order under the
 * lock, so all of them cooperate on the oldest batch, and batch b goes to
 * slot b % nslots. A slot is reusable once the consumer has moved past it. */

struct nn_imgf_loader {
    const nn_imgf *ds;
    const nn_imgf_stats *st;
    nn_imgf_loader_config cfg;
    nn_imgf_norm norm;
    int S, C, views, nbatches, nslots, nthreads;
    size_t img;           /* floats per view: 3 * C * C */
    int32_t *order;
    float **x;
    int32_t **y;
    int *count, *batch_of, *done;
    uint8_t **scratch;    /* per worker: S x S x 3 */
    int next, end;        /* positions: the next to make, one past the last */
    int give, held, epoch, busy;
    unsigned gen;
    bool active, stop;
    long long failures;
    pthread_t *th;
    void *args;           /* the workers' worker_arg array */
    int started;
    bool inited;
    pthread_mutex_t mu;
    pthread_cond_t work, ready;
};

typedef struct worker_arg {
    nn_imgf_loader *l;
    int id;
} worker_arg;

static void make_sample(nn_imgf_loader *l, int id, int epoch, int pos, float *x, int32_t *y)
{
    int idx = l->order[pos];
    *y = nn_imgf_label(l->ds, idx);
    uint8_t *img = l->scratch[id];
    if (nn_imgf_load_center(nn_imgf_path(l->ds, idx), l->S, img) != NN_OK) {
        pthread_mutex_lock(&l->mu);
        if (l->failures++ < REPORT_MAX) fprintf(stderr, "convnet: %s (using the mean image instead)\n", nn_errmsg());
        pthread_mutex_unlock(&l->mu);
        memset(x, 0, l->img * (size_t)l->views * sizeof(float));
        return;
    }
    if (l->cfg.mode == NN_IMGF_TRAIN) {
        nn_imgf_aug a = nn_imgf_draw(l->cfg.seed, epoch, pos, l->S, l->C, !l->cfg.no_flip, l->cfg.lighting_std);
        nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x);
    } else if (l->cfg.mode == NN_IMGF_CENTER) {
        nn_imgf_aug a = nn_imgf_view(4, l->S, l->C);
        nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x);
    } else {
        for (int v = 0; v < 10; v++) {
            nn_imgf_aug a = nn_imgf_view(v, l->S, l->C);
            nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x + (size_t)v * l->img);
        }
    }
}

static void *loader_worker(void *p)
{
    worker_arg *wa = p;
    nn_imgf_loader *l = wa->l;
    int B = l->cfg.batch;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int low = l->held >= 0 ? l->give - 1 : l->give; /* oldest batch whose slot is taken */
        if (l->stop) break;
        if (!(l->active && l->next < l->end && l->next / B < low + l->nslots)) {
            pthread_cond_wait(&l->work, &l->mu);
            continue;
        }
        int pos = l->next++, b = pos / B, k = pos % B, slot = b % l->nslots, epoch = l->epoch;
        if (k == 0) {
            l->batch_of[slot] = b;
            l->done[slot] = 0;
            l->count[slot] = l->end - pos < B ? l->end - pos : B;
        }
        unsigned gen = l->gen;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        make_sample(l, wa->id, epoch, pos, l->x[slot] + (size_t)k * l->views * l->img, l->y[slot] + k);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->gen && ++l->done[slot] == l->count[slot]) pthread_cond_broadcast(&l->ready);
        if (gen != l->gen && l->busy == 0) pthread_cond_broadcast(&l->ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

nn_status nn_imgf_loader_new(nn_imgf_loader **out, const nn_imgf *ds, const nn_imgf_stats *stats,
                             const nn_imgf_loader_config *cfg)
{
    *out = NULL;
    int C = cfg->crop ? cfg->crop : NN_IMGF_CROP, S = ds->st.size;
    if (cfg->batch < 1 || C < 1 || C > S || cfg->mode < NN_IMGF_TRAIN || cfg->mode > NN_IMGF_TENCROP ||
        cfg->threads < 0 || cfg->prefetch < 0 || !(cfg->lighting_std >= 0))
        return nn_error(NN_E_ARG, "image loader: need batch >= 1, 1 <= crop (%d) <= resize (%d), threads >= 0, "
                                  "lighting std >= 0", C, S);
    if (!stats) stats = &ds->st;
    if (stats->size != S)
        return nn_error(NN_E_ARG, "image loader: statistics of %dx%d images for a data set resized to %d", stats->size,
                        stats->size, S);
    nn_imgf_loader *l = calloc(1, sizeof *l);
    if (!l) return nn_error(NN_E_NOMEM, "image loader: out of memory");
    l->ds = ds;
    l->st = stats;
    l->cfg = *cfg;
    l->S = S;
    l->C = C;
    l->views = cfg->mode == NN_IMGF_TENCROP ? 10 : 1;
    l->img = (size_t)3 * C * C;
    int n = ds->nok;
    l->nbatches = cfg->drop_last ? n / cfg->batch : (n + cfg->batch - 1) / cfg->batch;
    if (l->nbatches < 1) l->nbatches = 1, l->cfg.drop_last = false;
    l->nslots = (cfg->prefetch ? cfg->prefetch : 3) + 1; /* + the one the consumer holds */
    l->nthreads = threads_or_cores(cfg->threads);
    l->norm.mean = cfg->mean;
    for (int c = 0; c < 3; c++) l->norm.scale[c] = cfg->raw_scale ? 1.0f : 1.0f / stats->std[c];
    l->held = -1;
    l->order = malloc((size_t)n * sizeof *l->order);
    l->x = calloc((size_t)l->nslots, sizeof *l->x);
    l->y = calloc((size_t)l->nslots, sizeof *l->y);
    l->count = calloc((size_t)l->nslots, sizeof(int));
    l->batch_of = calloc((size_t)l->nslots, sizeof(int));
    l->done = calloc((size_t)l->nslots, sizeof(int));
    l->scratch = calloc((size_t)l->nthreads, sizeof *l->scratch);
    l->th = calloc((size_t)l->nthreads, sizeof *l->th);
    bool ok = l->order && l->x && l->y && l->count && l->batch_of && l->done && l->scratch && l->th;
    for (int k = 0; ok && k < l->nslots; k++) {
        l->x[k] = malloc(l->img * (size_t)l->views * (size_t)cfg->batch * sizeof(float));
        l->y[k] = malloc((size_t)cfg->batch * sizeof(int32_t));
        ok = l->x[k] && l->y[k];
        l->batch_of[k] = -1;
    }
    for (int t = 0; ok && t < l->nthreads; t++) ok = (l->scratch[t] = malloc((size_t)S * S * 3)) != NULL;
    worker_arg *args = ok ? calloc((size_t)l->nthreads, sizeof *args) : NULL;
    if (!args) {
        nn_imgf_loader_free(l);
        return nn_error(NN_E_NOMEM, "image loader: out of memory for %d batches of %d x %d x 3 x %d x %d", l->nslots,
                        cfg->batch, l->views, C, C);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->ready, NULL);
    l->args = args;
    l->inited = true;
    for (int t = 0; t < l->nthreads; t++) {
        args[t].l = l;
        args[t].id = t;
        if (pthread_create(&l->th[t], NULL, loader_worker, &args[t]) != 0) break;
        l->started++;
    }
    if (l->started == 0) {
        nn_imgf_loader_free(l);
        return nn_error(NN_E_NOMEM, "image loader: cannot start a worker thread");
    }
    *out = l;
    return NN_OK;
}

void nn_imgf_loader_free(nn_imgf_loader *l)
{
    if (!l) return;
    if (l->inited) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
        for (int t = 0; t < l->started; t++) pthread_join(l->th[t], NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->work);
        pthread_cond_destroy(&l->ready);
    }
    for (int k = 0; k < l->nslots && l->x; k++) free(l->x[k]);
    for (int k = 0; k < l->nslots && l->y; k++) free(l->y[k]);
    for (int t = 0; t < l->nthreads && l->scratch; t++) free(l->scratch[t]);
    free(l->x);
    free(l->y);
    free(l->scratch);
    free(l->count);
    free(l->batch_of);
    free(l->done);
    free(l->order);
    free(l->th);
    free(l->args);
    free(l);
}

int nn_imgf_loader_batches(const nn_imgf_loader *l) { return l->nbatches; }
int nn_imgf_loader_views(const nn_imgf_loader *l) { return l->views; }

long long nn_imgf_loader_failures(const nn_imgf_loader *l)
{
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    long long f = l->failures;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
    return f;
}

nn_status nn_imgf_loader_start(nn_imgf_loader *l, int epoch, int first)
{
    if (epoch < 0 || first < 0 || first > l->nbatches)
        return nn_error(NN_E_ARG, "image loader: cannot start epoch %d at batch %d of %d", epoch, first, l->nbatches);
    int n = l->ds->nok;
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->active = false;
    while (l->busy > 0) pthread_cond_wait(&l->ready, &l->mu); /* no worker writes into a slot any more */
    for (int i = 0; i < n; i++) l->order[i] = i;
    if (l->cfg.shuffle) {
        nn_rng r = {l->cfg.seed ^ ORDER_KEY, (uint64_t)epoch << 40};
        nn_rng_shuffle(&r, l->order, (size_t)n);
    }
    l->epoch = epoch;
    l->end = l->cfg.drop_last ? l->nbatches * l->cfg.batch : n;
    l->next = first * l->cfg.batch < l->end ? first * l->cfg.batch : l->end;
    l->give = first;
    l->held = -1;
    for (int k = 0; k < l->nslots; k++) l->batch_of[k] = -1;
    l->active = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

nn_status nn_imgf_loader_next(nn_imgf_loader *l, const float **x, const int32_t **y, int *n)
{
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) { /* the caller is done with the previous batch */
        l->batch_of[l->held] = -1;
        l->held = -1;
        pthread_cond_broadcast(&l->work);
    }
    if (!l->active || l->give >= l->nbatches || l->give * l->cfg.batch >= l->end) {
        pthread_mutex_unlock(&l->mu);
        *n = 0;
        return NN_OK;
    }
    int slot = l->give % l->nslots;
    while (!(l->batch_of[slot] == l->give && l->done[slot] == l->count[slot])) pthread_cond_wait(&l->ready, &l->mu);
    l->held = slot;
    l->give++;
    *x = l->x[slot];
    *y = l->y[slot];
    *n = l->count[slot];
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

/* ---- scoring --------------------------------------------------------------- */

static nn_status src_start(void *l, int epoch, int first) { return nn_imgf_loader_start(l, epoch, first); }

static nn_status src_next(void *l, const float **x, const int32_t **y, int *n)
{
    return nn_imgf_loader_next(l, x, y, n);
}

nn_batch_source nn_imgf_loader_source(nn_imgf_loader *l)
{
    nn_batch_source s = {l, nn_imgf_loader_views(l), nn_imgf_loader_batches(l), src_start, src_next};
    return s;
}
