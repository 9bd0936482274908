/* Image folders and AlexNet's data pipeline (see imagefolder.h): opening a
 * split (scan, cached or fresh statistics pass) and the accessors. The work
 * itself is in imagefolder_{scan,stats,transform,loader}.c
 * (imagefolder_impl.h lists them). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/imagefolder_impl.h"

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
    ds->root = imgf_join(dir, split ? split : "");
    ds->st.size = S;
    ds->mean_image = calloc((size_t)S * S * 3, sizeof(float));
    if (!ds->root || !ds->mean_image) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    if ((s = imgf_list_dir(ds->root, &sub, &nsub)) != NN_OK) goto fail;
    /* class folders: the subfolders */
    int nd = 0;
    for (int i = 0; i < nsub; i++) {
        char *p = imgf_join(ds->root, sub[i]);
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
        s = imgf_walk(ds->root, sub[i], label, &sc, 0);
    }
    ds->all = sc.e;
    ds->nall = sc.n;
    ds->ignored = sc.ignored;
    if (s != NN_OK) goto fail;
    int threads = imgf_threads(cfg.threads);
    uint64_t hash = imgf_list_hash(ds, S);
    cpath = imgf_cache_path(dir, split, S, &cfg);
    if (!cpath) {
        s = nn_error(NN_E_NOMEM, "image folder: out of memory");
        goto fail;
    }
    if (!imgf_cache_read(ds, cpath, hash, S)) {
        if (cfg.report)
            fprintf(cfg.report, "%s: checking %d images and computing their statistics (once; cached in %s)\n",
                    ds->root, ds->nall, cpath), fflush(cfg.report);
        if ((s = imgf_stats_pass(ds, S, threads)) != NN_OK) goto fail;
        imgf_cache_write(ds, cpath, hash);
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
        if (!(ds->paths[ds->nok] = imgf_join(ds->root, ds->all[i].rel))) {
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
    imgf_free_names(sub, nsub);
    free(cpath);
    *out = ds;
    return NN_OK;
fail:
    imgf_free_names(sub, nsub);
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

