/*
 * Preloaded into Debian's redis-server, before libfaketime, when the tests run it under
 * libfaketime (a Redis whose clock a test moves; `make test`'s year-ahead run).
 *
 * Why: redis-server is linked with jemalloc, and the two deadlock at start (libfaketime
 * issue #130): jemalloc's initialisation calls pthread_cond_init and clock_gettime, which
 * libfaketime intercepts and can only serve once it has initialised itself - and its own
 * initialisation (dlsym) calls malloc, i.e. jemalloc, which is still initialising.
 *
 * What: every allocation entry point redis-server imports goes to glibc's allocator instead
 * (__libc_*), so libfaketime initialises on glibc and jemalloc is never asked for memory.
 * jemalloc's own calls are answered as by an allocator without them: mallctl reports an
 * unknown name (Redis then shows no allocator statistics), nallocx the size asked for (no
 * extra usable bytes are promised), malloc_stats_print prints nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);

void *malloc(size_t size) { return __libc_malloc(size); }
void *calloc(size_t count, size_t size) { return __libc_calloc(count, size); }
void *realloc(void *ptr, size_t size) { return __libc_realloc(ptr, size); }
void free(void *ptr) { __libc_free(ptr); }
void *memalign(size_t align, size_t size) { return __libc_memalign(align, size); }
void *aligned_alloc(size_t align, size_t size) { return __libc_memalign(align, size); }
void *valloc(size_t size) { return __libc_valloc(size); }

int posix_memalign(void **out, size_t align, size_t size) {
    void *ptr = __libc_memalign(align, size);
    if (ptr == NULL)
        return ENOMEM;
    *out = ptr;
    return 0;
}

/* glibc exports its malloc_usable_size under that name only, which this file shadows. */
size_t malloc_usable_size(void *ptr) {
    static size_t (*glibc)(void *);
    if (glibc == NULL)
        glibc = (size_t (*)(void *))dlsym(dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD),
                                          "malloc_usable_size");
    return glibc(ptr);
}

int mallctl(const char *name, void *old, size_t *oldlen, void *new, size_t newlen) {
    (void)name, (void)old, (void)oldlen, (void)new, (void)newlen;
    return ENOENT;
}

size_t nallocx(size_t size, int flags) {
    (void)flags;
    return size;
}

void malloc_stats_print(void (*write)(void *, const char *), void *arg, const char *opts) {
    (void)write, (void)arg, (void)opts;
}
