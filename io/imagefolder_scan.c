/* Image folders, the scan (see imagefolder.h): the walk over DIR/SPLIT/CLASS
 * (sorted, hidden entries and non-images left out) and the cache of the
 * checking/statistics pass, keyed by a hash of the file list. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/threads.h"
#include "io/imagefolder_impl.h"

#define CACHE_MAGIC "CNVIMGF1"

int imgf_threads(int t)
{
    if (t > 0) return t;
    int n = nn_cpu_count(); /* this process's CPUs (affinity), not the machine's */
    return n > 256 ? 256 : n;
}

char *imgf_join(const char *a, const char *b)
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

/* Sorted names of the entries of dir (hidden ones left out). */
nn_status imgf_list_dir(const char *dir, char ***names, int *n)
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

void imgf_free_names(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Adds the image files below root/rel (recursively, in strcmp order). */
nn_status imgf_walk(const char *root, const char *rel, int32_t label, scan *sc, int depth)
{
    if (depth > 32) return nn_error(NN_E_FORMAT, "%s/%s: folders nested too deep (a link loop?)", root, rel);
    char *dir = imgf_join(root, rel);
    if (!dir) return nn_error(NN_E_NOMEM, "out of memory scanning %s", root);
    char **names;
    int n;
    nn_status s = imgf_list_dir(dir, &names, &n);
    for (int i = 0; i < n && s == NN_OK; i++) {
        char *r = imgf_join(rel, names[i]), *full = r ? imgf_join(root, r) : NULL;
        struct stat sb;
        if (!full) {
            s = nn_error(NN_E_NOMEM, "out of memory scanning %s", root);
        } else if (stat(full, &sb) != 0) {
            sc->ignored++; /* a dangling link */
        } else if (S_ISDIR(sb.st_mode)) {
            s = imgf_walk(root, r, label, sc, depth + 1);
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
    imgf_free_names(names, n);
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

uint64_t imgf_list_hash(const nn_imgf *ds, int S)
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

char *imgf_cache_path(const char *dir, const char *split, int S, const nn_imgf_config *cfg)
{
    char name[256];
    snprintf(name, sizeof name, ".convnet-%s-%d.cache", split && *split ? split : "all", S);
    return imgf_join(cfg->cache_dir ? cfg->cache_dir : dir, name);
}

void imgf_cache_write(const nn_imgf *ds, const char *path, uint64_t hash)
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
bool imgf_cache_read(nn_imgf *ds, const char *path, uint64_t hash, int S)
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

