/*
 * testplugin.c: a credentials plugin for t/plugins.rs, shaped by -D flags
 * into the broken, old, new and concurrent plugins the tests need:
 *
 *   NO_INIT        export no odmr_plugin_init
 *   INIT_VERSION   odmr_plugin_init answers ODMR_VERSION
 *   MAJOR=n        the descriptor claims ABI major n
 *   SHRINK=n       the descriptor's struct_size is n bytes below v1.0's
 *   OPS_SHRINK=n   the credential table's struct_size is n bytes below v1.0's
 *   NEWER_MINOR    a plugin of the next minor: descriptor and table with
 *                  appended fields, larger struct_size, abi_minor + 1
 *   FAIL_NEW       instance_new fails with a reason of its own
 *   THREADSAFE     sets ODMR_F_THREADSAFE
 *
 * Keys: user = NAME:PASSWORD:DOMAIN (one user, one domain), sleep_ms = N
 * (sleep inside every call). Every call counts how many threads are inside
 * the plugin at once and logs "entries now=N max=M" on its way out.
 */
#define _POSIX_C_SOURCE 200809L

#include "odmr_api.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef MAJOR
#define MAJOR ODMR_ABI_MAJOR
#endif
/* SHRINK and OPS_SHRINK count down from the ends of the v1.0 structs (their
 * last v1.0 fields), whatever minor the header is. */
#define PLUGIN_SIZE \
    (SHRINK ? offsetof(odmr_plugin, queue) + sizeof(void *) - SHRINK : sizeof(odmr_plugin))
#define OPS_SIZE                                                                            \
    (OPS_SHRINK ? offsetof(odmr_credentials_ops, list_domains) + sizeof(void *) - OPS_SHRINK \
                : sizeof(odmr_credentials_ops))
#ifndef SHRINK
#define SHRINK 0
#endif
#ifndef OPS_SHRINK
#define OPS_SHRINK 0
#endif
#ifdef THREADSAFE
#define FLAGS ODMR_F_THREADSAFE
#else
#define FLAGS 0u
#endif

struct inst {
    const odmr_host *host;
    char name[64], password[64], domain[128];
    long sleep_ms;
};

static atomic_int inside;
static atomic_int most;

static void say(const struct inst *in, const char *text)
{
    if (in->host && in->host->log)
        in->host->log(in->host->ctx, ODMR_LOG_INFO, (const uint8_t *)text, strlen(text));
}

static void enter(const struct inst *in)
{
    int now = atomic_fetch_add(&inside, 1) + 1, seen = atomic_load(&most);
    while (now > seen && !atomic_compare_exchange_weak(&most, &seen, now)) {
    }
    if (in->sleep_ms > 0) {
        struct timespec ts = { in->sleep_ms / 1000, (in->sleep_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static void leave(const struct inst *in)
{
    char line[64];
    int now = atomic_fetch_sub(&inside, 1);
    snprintf(line, sizeof line, "entries now=%d max=%d", now, atomic_load(&most));
    say(in, line);
}

static int same(odmr_str s, const char *text)
{
    return s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

static odmr_status lookup_secret(odmr_instance *i, odmr_str user, uint32_t *kind, uint8_t *buf,
                                 size_t cap, size_t *len_out)
{
    struct inst *in = (struct inst *)i;
    odmr_status rc = ODMR_NOT_FOUND;
    enter(in);
    if (same(user, in->name)) {
        *len_out = strlen(in->password);
        rc = ODMR_BUFFER_TOO_SMALL;
        if (*len_out <= cap) {
            memcpy(buf, in->password, *len_out);
            *kind = ODMR_SECRET_PLAIN;
            rc = ODMR_OK;
        }
    }
    leave(in);
    return rc;
}

static odmr_status list_domains(odmr_instance *i, odmr_str user, void *ctx, odmr_domain_cb cb)
{
    struct inst *in = (struct inst *)i;
    odmr_status rc = ODMR_NOT_FOUND;
    enter(in);
    if (same(user, in->name)) {
        odmr_str d = { (const uint8_t *)in->domain, strlen(in->domain) };
        cb(ctx, d);
        rc = ODMR_OK;
    }
    leave(in);
    return rc;
}

static odmr_status reason(uint8_t *err, size_t cap, size_t *err_len, const char *text)
{
    size_t len = strlen(text);
    memcpy(err, text, len < cap ? len : cap);
    *err_len = len;
    return ODMR_TEMPFAIL;
}

static odmr_status instance_new(const odmr_host *host, const odmr_kv *kvs, size_t n, odmr_instance **out,
                                uint8_t *err, size_t cap, size_t *err_len)
{
    struct inst *in;
    size_t k;
#ifdef FAIL_NEW
    (void)host, (void)kvs, (void)n, (void)out;
    return reason(err, cap, err_len, "cannot open the user database /nonexistent/users.db: No such file");
#endif
    in = calloc(1, sizeof *in);
    if (in == NULL)
        return reason(err, cap, err_len, "out of memory");
    in->host = host;
    for (k = 0; k < n; k++) {
        char value[256];
        size_t len = kvs[k].value.len < sizeof value - 1 ? kvs[k].value.len : sizeof value - 1;
        memcpy(value, kvs[k].value.ptr, len);
        value[len] = '\0';
        if (same(kvs[k].key, "user")) {
            if (sscanf(value, "%63[^:]:%63[^:]:%127s", in->name, in->password, in->domain) != 3) {
                free(in);
                return reason(err, cap, err_len, "user: not NAME:PASSWORD:DOMAIN");
            }
        } else if (same(kvs[k].key, "sleep_ms")) {
            in->sleep_ms = atol(value);
        } else {
            free(in);
            return reason(err, cap, err_len, "unknown key");
        }
    }
    *out = (odmr_instance *)in;
    return ODMR_OK;
}

static void instance_free(odmr_instance *i)
{
    free(i);
}

#ifdef NEWER_MINOR
/* What a plugin of the next minor would export: the v1.0 structs with fields
 * appended. A host of this minor must ignore the extra fields. */
struct credentials_ops_next {
    odmr_credentials_ops v1_0;
    odmr_status (*appended_op)(odmr_instance *inst);
};
struct plugin_next {
    odmr_plugin v1_0;
    uint64_t appended_flags;
    const void *appended_table;
};
static odmr_status appended_op(odmr_instance *inst)
{
    (void)inst;
    return ODMR_INTERNAL;
}
static const struct credentials_ops_next ops = {
    { .struct_size = sizeof(struct credentials_ops_next), .lookup_secret = lookup_secret,
      .list_domains = list_domains },
    appended_op,
};
static const struct plugin_next descriptor = {
    { .struct_size = sizeof(struct plugin_next), .abi_major = ODMR_ABI_MAJOR,
      .abi_minor = ODMR_ABI_MINOR + 1, .name = "testplugin", .version = "next-minor", .flags = FLAGS,
      .instance_new = instance_new, .instance_free = instance_free, .credentials = &ops.v1_0 },
    0xffffffffffffffffu,
    &ops,
};
#define DESCRIPTOR (&descriptor.v1_0)
#else
static const odmr_credentials_ops ops = {
    .struct_size = (uint32_t)OPS_SIZE, .lookup_secret = lookup_secret,
    .list_domains = list_domains,
};
static const odmr_plugin descriptor = {
    .struct_size = (uint32_t)PLUGIN_SIZE, .abi_major = MAJOR,
    .abi_minor = ODMR_ABI_MINOR, .name = "testplugin", .version = "test", .flags = FLAGS,
    .instance_new = instance_new, .instance_free = instance_free, .credentials = &ops,
};
#define DESCRIPTOR (&descriptor)
#endif

#ifdef NO_INIT
odmr_status odmr_plugin_start(const odmr_host *host, const odmr_plugin **out);
odmr_status odmr_plugin_start(const odmr_host *host, const odmr_plugin **out)
#else
odmr_status odmr_plugin_init(const odmr_host *host, const odmr_plugin **out)
#endif
{
#ifdef INIT_VERSION
    (void)host;
    (void)out;
    (void)DESCRIPTOR;
    return ODMR_VERSION;
#else
    if (host->abi_major != ODMR_ABI_MAJOR)
        return ODMR_VERSION;
    *out = DESCRIPTOR;
    return ODMR_OK;
#endif
}
