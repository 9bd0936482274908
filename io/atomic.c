/* Atomic file replacement (see atomic.h), shared by every writer in io/. */
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* fsync of the directory holding path, so the rename itself is durable. */
static nn_status sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return nn_error(NN_E_IO, "%s: cannot open directory %s to sync: %s", path, dir, strerror(errno));
    int r = fsync(fd);
    int err = errno;
    close(fd);
    /* some file systems cannot sync directories; the rename is done either way */
    if (r != 0 && err != EINVAL && err != ENOTSUP)
        return nn_error(NN_E_IO, "%s: fsync of directory %s failed: %s", path, dir, strerror(err));
    return NN_OK;
}

nn_status nn_write_atomic(const char *path, nn_write_fn write, void *user)
{
    size_t tn = strlen(path) + 32;
    char *tmp = malloc(tn);
    if (!tmp) return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tn, "%s.tmp.%ld", path, (long)getpid());
    nn_status s = NN_OK;
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        s = nn_error(NN_E_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        s = write(fp, path, user);
        if (s == NN_OK && fflush(fp) != 0)
            s = nn_error(NN_E_IO, "%s: write failed (flush): %s", path, strerror(errno));
        if (s == NN_OK && fsync(fileno(fp)) != 0)
            s = nn_error(NN_E_IO, "%s: fsync failed: %s", path, strerror(errno));
        if (fclose(fp) != 0 && s == NN_OK)
            s = nn_error(NN_E_IO, "%s: close failed: %s", path, strerror(errno));
        if (s == NN_OK && rename(tmp, path) != 0)
            s = nn_error(NN_E_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        if (s != NN_OK)
            unlink(tmp);
        else
            s = sync_dir(path);
    }
    free(tmp);
    return s;
}
