/* Opening either kind of data for the commands (see data.h). */
#include "tools/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CLASSES 4096

static bool is_dir(const char *dir, const char *sub)
{
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, sub);
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool cli_data_is_folder(const char *dir) { return dir && (is_dir(dir, "train") || is_dir(dir, "val")); }

static nn_status join_classes(cli_data *d)
{
    size_t k = 0;
    d->classes_joined[0] = '\0';
    for (int i = 0; i < d->classes; i++) {
        int w = snprintf(d->classes_joined + k, sizeof d->classes_joined - k, "%s%s", i ? "\n" : "",
                         d->class_names[i]);
        if (w < 0 || (size_t)w >= sizeof d->classes_joined - k)
            return nn_error(NN_E_UNSUPPORTED, "data: the class names do not fit in a checkpoint (%d classes)", d->classes);
        k += (size_t)w;
    }
    return NN_OK;
}

static nn_status open_fmnist(cli_data *d, const cli_data_opts *o)
{
    NN_TRY(nn_fmnist_load(o->dir, false, &d->test));
    if (o->test_limit && o->test_limit < d->test.n) d->test.n = o->test_limit;
    d->mean = o->mean;
    d->std = o->std;
    if (o->train || !(o->std > 0)) {
        NN_TRY(nn_fmnist_load(o->dir, true, &d->train));
        if (o->limit && o->limit < d->train.n) d->train.n = o->limit;
        if (!(o->std > 0)) nn_dataset_stats(&d->train, &d->mean, &d->std);
    }
    nn_loader_config lc = {.batch = o->batch, .size = o->size, .shuffle = true, .augment = o->augment,
                           .drop_last = true, .mean = d->mean, .std = d->std, .seed = o->seed};
    if (o->train && o->resident) {
        NN_TRY(nn_resident_new(&d->rs, &d->train, o->dev, &lc));
        d->train_src = nn_resident_source(d->rs);
    } else if (o->train) {
        NN_TRY(nn_loader_new(&d->tl, &d->train, &lc));
        d->train_src = nn_loader_source(d->tl);
    }
    lc.shuffle = lc.augment = lc.drop_last = false;
    lc.batch = o->eval_batch;
    NN_TRY(nn_loader_new(&d->vl, &d->test, &lc));
    d->test_src = nn_loader_source(d->vl);
    d->channels = d->test.c;
    d->classes = d->test.classes;
    d->class_names = d->test.class_names;
    d->ntrain = d->train.n;
    d->ntest = d->test.n;
    return NN_OK;
}

static nn_status open_folder(cli_data *d, const cli_data_opts *o)
{
    /* the paper's 256 -> 224 ratio at any model size */
    nn_imgf_config ic = {.resize = (o->size * NN_IMGF_RESIZE + NN_IMGF_CROP / 2) / NN_IMGF_CROP, .report = stderr};
    const char *names[MAX_CLASSES];
    char *copy = NULL;
    int n = 0;
    if (o->classes) {
        copy = strdup(o->classes);
        if (!copy) return nn_error(NN_E_NOMEM, "data: out of memory");
        for (char *p = copy, *save = NULL, *t; (t = strtok_r(p, "\n", &save)) && n < MAX_CLASSES; p = NULL)
            names[n++] = t;
    }
    nn_status s = nn_imgf_open(&d->itr, o->dir, "train", n ? names : NULL, n, &ic);
    if (s == NN_OK)
        s = nn_imgf_open(&d->iva, o->dir, "val", nn_imgf_class_names(d->itr), nn_imgf_classes(d->itr), &ic);
    free(copy);
    NN_TRY(s);
    if (nn_imgf_count(d->itr) == 0 || nn_imgf_count(d->iva) == 0)
        return nn_error(NN_E_FORMAT, "%s: needs images in both train/ and val/ (found %d and %d)", o->dir,
                        nn_imgf_count(d->itr), nn_imgf_count(d->iva));
    nn_imgf_loader_config lc = {.mode = o->augment ? NN_IMGF_TRAIN : NN_IMGF_CENTER, .batch = o->batch,
                                .crop = o->size, .shuffle = true, .drop_last = true,
                                .lighting_std = NN_IMGF_LIGHTING_STD, .seed = o->seed};
    if (o->train) {
        NN_TRY(nn_imgf_loader_new(&d->itl, d->itr, NULL, &lc));
        d->train_src = nn_imgf_loader_source(d->itl);
    }
    lc.mode = o->ten_crop ? NN_IMGF_TENCROP : NN_IMGF_CENTER;
    lc.shuffle = lc.drop_last = false;
    lc.batch = o->ten_crop ? (o->eval_batch + 9) / 10 : o->eval_batch;
    NN_TRY(nn_imgf_loader_new(&d->ivl, d->iva, nn_imgf_get_stats(d->itr), &lc));
    d->test_src = nn_imgf_loader_source(d->ivl);
    d->folder = true;
    d->channels = 3;
    d->classes = nn_imgf_classes(d->itr);
    d->class_names = nn_imgf_class_names(d->itr);
    d->ntrain = nn_imgf_count(d->itr);
    d->ntest = nn_imgf_count(d->iva);
    return NN_OK;
}

nn_status cli_data_open(cli_data *d, const cli_data_opts *o)
{
    memset(d, 0, sizeof *d);
    if (o->resident && cli_data_is_folder(o->dir))
        return nn_error(NN_E_UNSUPPORTED, "data: the device-resident data set is for Fashion-MNIST; the image folder "
                                          "%s needs the normal loader (unset NN_RESIDENT)", o->dir);
    nn_status s = cli_data_is_folder(o->dir) ? open_folder(d, o) : open_fmnist(d, o);
    if (s == NN_OK) s = join_classes(d);
    if (s != NN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nn_errmsg());
        cli_data_close(d);
        nn_error(s, "%s", msg);
    }
    return s;
}

void cli_data_close(cli_data *d)
{
    nn_loader_free(d->tl);
    nn_loader_free(d->vl);
    nn_resident_free(d->rs);
    nn_imgf_loader_free(d->itl);
    nn_imgf_loader_free(d->ivl);
    nn_imgf_free(d->itr);
    nn_imgf_free(d->iva);
    nn_dataset_free(&d->train);
    nn_dataset_free(&d->test);
    memset(d, 0, sizeof *d);
}
