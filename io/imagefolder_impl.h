/* Internal to io/imagefolder*.c (not installed): the image folder's struct
 * and the helpers its files share. The files by concern:
 *   imagefolder.c            opening a split, accessors (the wiring)
 *   imagefolder_scan.c       the folder walk and the statistics cache
 *   imagefolder_stats.c      the one-time checking/statistics pass, RGB PCA
 *   imagefolder_transform.c  decoding, resize and crop arithmetic, augmentation
 *   imagefolder_loader.c     the pool of workers that makes float batches */
#ifndef NN_IMAGEFOLDER_IMPL_H
#define NN_IMAGEFOLDER_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/imagefolder.h"

/* not exported from libconvnet.so */
#define NN_IMGF_INTERNAL __attribute__((visibility("hidden")))

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

/* the files found by the walk */
typedef struct scan {
    entry *e;
    int n, cap, ignored;
} scan;

/* helpers (imagefolder_scan.c); t if > 0, else the online CPUs (1 to 256) */
NN_IMGF_INTERNAL int imgf_threads(int t);
/* a "/" b, malloc'ed; NULL on out of memory */
NN_IMGF_INTERNAL char *imgf_join(const char *a, const char *b);

/* imagefolder_scan.c */
NN_IMGF_INTERNAL nn_status imgf_list_dir(const char *dir, char ***names, int *n);
NN_IMGF_INTERNAL void imgf_free_names(char **names, int n);
NN_IMGF_INTERNAL nn_status imgf_walk(const char *root, const char *rel, int32_t label, scan *sc, int depth);
NN_IMGF_INTERNAL uint64_t imgf_list_hash(const nn_imgf *ds, int S);
NN_IMGF_INTERNAL char *imgf_cache_path(const char *dir, const char *split, int S, const nn_imgf_config *cfg);
NN_IMGF_INTERNAL void imgf_cache_write(const nn_imgf *ds, const char *path, uint64_t hash);
NN_IMGF_INTERNAL bool imgf_cache_read(nn_imgf *ds, const char *path, uint64_t hash, int S);

/* imagefolder_stats.c */
NN_IMGF_INTERNAL nn_status imgf_stats_pass(nn_imgf *ds, int S, int threads);

#endif
