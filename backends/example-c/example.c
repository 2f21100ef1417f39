/*
 * example.c: an odmrd backend written in C against odmr_api.h, serving both
 * [credentials] and [queue]. See README.md beside this file.
 *
 * Credentials come from the plugin's ini keys:
 *     user = NAME:PASSWORD:DOMAIN[,DOMAIN...]
 *     user2 = ...            (numbered keys for more users: an ini key may
 *                             appear only once per section)
 * The queue is a directory with one file per message (names starting with
 * '.' are ignored): envelope lines, an empty line, then the message as is.
 *     Envelope-From: <alice@example.net>      (<> for the null sender)
 *     Envelope-To: <bob@example.org>          (one line per recipient)
 *
 *     Subject: ...
 * Committing a message removes its delivered and permanently failed
 * recipients: the file is deleted when none remains, else rewritten (to a
 * temporary file, then renamed over it).
 *
 * The plugin is not thread-safe (flags 0): odmrd never calls it from two
 * threads at once. It logs only through the host's log up-call.
 *
 * Build: cc -shared -fPIC -I odmr-api/include -o libexample.so example.c
 */
#define _POSIX_C_SOURCE 200809L

#include "odmr_api.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Instance: users and the queue directory. */

struct user {
    char *name;
    char *password;
    char **domains;
    size_t n_domains;
};

struct example {
    const odmr_host *host;
    struct user *users;
    size_t n_users;
    char *directory; /* NULL when the section has none (credentials only) */
};

/* Log one line through the host (never to stdout/stderr: under inetd those
 * are the customer's connection). */
static void say(const odmr_host *host, int32_t level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    if (host == NULL || host->log == NULL)
        return;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    host->log(host->ctx, level, (const uint8_t *)line, (size_t)n);
}

/* A NUL-terminated copy of a borrowed string. */
static char *copy_str(odmr_str s)
{
    char *out = malloc(s.len + 1);

    if (out == NULL)
        return NULL;
    if (s.len > 0)
        memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

static int str_is(odmr_str s, const char *text)
{
    return s.len == strlen(text) && (s.len == 0 || memcmp(s.ptr, text, s.len) == 0);
}

/* Keys "user", "user1", "user2", ... */
static int is_user_key(odmr_str key)
{
    size_t i;

    if (key.len < 4 || memcmp(key.ptr, "user", 4) != 0)
        return 0;
    for (i = 4; i < key.len; i++)
        if (!isdigit(key.ptr[i]))
            return 0;
    return 1;
}

static void free_example(struct example *ex)
{
    size_t i, j;

    if (ex == NULL)
        return;
    for (i = 0; i < ex->n_users; i++) {
        free(ex->users[i].name);
        free(ex->users[i].password);
        for (j = 0; j < ex->users[i].n_domains; j++)
            free(ex->users[i].domains[j]);
        free(ex->users[i].domains);
    }
    free(ex->users);
    free(ex->directory);
    free(ex);
}

/* Parse NAME:PASSWORD:DOMAIN[,DOMAIN...] into a new user; 0 on success. */
static int add_user(struct example *ex, const char *value)
{
    char *copy = strdup(value), *password, *domains, *domain, *save = NULL;
    struct user *users, *u;

    if (copy == NULL)
        return -1;
    password = strchr(copy, ':');
    domains = password ? strchr(password + 1, ':') : NULL;
    if (password == NULL || domains == NULL || password == copy) {
        free(copy);
        return -1;
    }
    *password++ = '\0';
    *domains++ = '\0';
    users = realloc(ex->users, (ex->n_users + 1) * sizeof *users);
    if (users == NULL) {
        free(copy);
        return -1;
    }
    ex->users = users;
    u = &users[ex->n_users++];
    memset(u, 0, sizeof *u);
    u->name = strdup(copy);
    u->password = strdup(password);
    for (domain = strtok_r(domains, ", ", &save); domain; domain = strtok_r(NULL, ", ", &save)) {
        char **more = realloc(u->domains, (u->n_domains + 1) * sizeof *more);
        if (more == NULL)
            break;
        u->domains = more;
        u->domains[u->n_domains++] = strdup(domain);
    }
    free(copy);
    return u->name && u->password ? 0 : -1;
}

static odmr_status refuse(uint8_t *err, size_t err_cap, size_t *err_len, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    size_t len;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    len = strlen(reason);
    if (err != NULL)
        memcpy(err, reason, len < err_cap ? len : err_cap);
    if (err_len != NULL)
        *err_len = len;
    return ODMR_INVALID_ARGUMENT;
}

static odmr_status example_new(const odmr_host *host, const odmr_kv *kvs, size_t n_kvs,
                               odmr_instance **out, uint8_t *err, size_t err_cap, size_t *err_len)
{
    struct example *ex = calloc(1, sizeof *ex);
    size_t i;

    if (ex == NULL)
        return refuse(err, err_cap, err_len, "out of memory");
    ex->host = host;
    for (i = 0; i < n_kvs; i++) {
        char *value = copy_str(kvs[i].value);
        char *key = copy_str(kvs[i].key);
        odmr_status rc = ODMR_OK;

        if (value == NULL || key == NULL)
            rc = refuse(err, err_cap, err_len, "out of memory");
        else if (is_user_key(kvs[i].key)) {
            if (add_user(ex, value) != 0)
                rc = refuse(err, err_cap, err_len, "%s: '%s' is not NAME:PASSWORD:DOMAIN[,DOMAIN...]",
                            key, value);
        } else if (str_is(kvs[i].key, "directory")) {
            if (value[0] != '/')
                rc = refuse(err, err_cap, err_len, "directory: '%s' is not an absolute path", value);
            else {
                free(ex->directory);
                ex->directory = value;
                value = NULL;
            }
        } else
            rc = refuse(err, err_cap, err_len, "unknown key '%s' (known: user, user1, user2..., directory)",
                        key);
        free(value);
        free(key);
        if (rc != ODMR_OK) {
            free_example(ex);
            return rc;
        }
    }
    say(host, ODMR_LOG_INFO, "example: %zu users, queue directory %s", ex->n_users,
        ex->directory ? ex->directory : "(none)");
    *out = (odmr_instance *)ex;
    return ODMR_OK;
}

static void example_free(odmr_instance *inst)
{
    free_example((struct example *)inst);
}

/* ------------------------------------------------------------------------ */
/* Credentials. */

static const struct user *find_user(const struct example *ex, odmr_str name)
{
    size_t i;

    for (i = 0; i < ex->n_users; i++)
        if (str_is(name, ex->users[i].name))
            return &ex->users[i];
    return NULL;
}

static odmr_status lookup_secret(odmr_instance *inst, odmr_str user, uint32_t *kind_out, uint8_t *buf,
                                 size_t cap, size_t *len_out)
{
    const struct user *u = find_user((struct example *)inst, user);
    size_t len;

    if (u == NULL)
        return ODMR_NOT_FOUND;
    len = strlen(u->password);
    *len_out = len; /* reported either way: BUFFER_TOO_SMALL says how much is needed */
    if (len > cap)
        return ODMR_BUFFER_TOO_SMALL;
    memcpy(buf, u->password, len);
    *kind_out = ODMR_SECRET_PLAIN;
    return ODMR_OK;
}

static odmr_status list_domains(odmr_instance *inst, odmr_str user, void *cb_ctx, odmr_domain_cb cb)
{
    const struct user *u = find_user((struct example *)inst, user);
    size_t i;

    if (u == NULL)
        return ODMR_NOT_FOUND;
    for (i = 0; i < u->n_domains; i++) {
        odmr_str d = { (const uint8_t *)u->domains[i], strlen(u->domains[i]) };
        cb(cb_ctx, d);
    }
    return ODMR_OK;
}

/* Designated initializers: fields a later ABI minor appends stay NULL/0, so
 * this source builds unchanged against any 1.x header. */
static const odmr_credentials_ops credentials_ops = {
    .struct_size = sizeof(odmr_credentials_ops),
    .lookup_secret = lookup_secret,
    .list_domains = list_domains,
};

/* ------------------------------------------------------------------------ */
/* Queue: one message file. */

#define NO_OUTCOME (-1)

struct rcpt {
    char *address;
    int selected; /* in a requested domain: offered to the host */
    int32_t outcome;
};

struct message {
    char *name;   /* file name in the directory: the queue id */
    char *sender; /* "" for the null sender */
    struct rcpt *rcpts;
    size_t n_rcpts;
    size_t n_selected;
    size_t *selected; /* host's recipient index -> index in rcpts */
    long content_offset;
    uint64_t size;
    FILE *file;
};

static void free_message(struct message *m)
{
    size_t i;

    for (i = 0; i < m->n_rcpts; i++)
        free(m->rcpts[i].address);
    free(m->rcpts);
    free(m->selected);
    free(m->sender);
    free(m->name);
    if (m->file)
        fclose(m->file);
    memset(m, 0, sizeof *m);
}

/* The address inside <...>, or the whole trimmed value. */
static char *address_of(const char *value)
{
    const char *open = strchr(value, '<'), *close = open ? strchr(open, '>') : NULL;
    size_t len;

    while (isspace((unsigned char)*value))
        value++;
    if (open && close) {
        value = open + 1;
        len = (size_t)(close - value);
    } else {
        len = strlen(value);
        while (len > 0 && isspace((unsigned char)value[len - 1]))
            len--;
    }
    return strndup(value, len);
}

static int domain_requested(const char *address, char *const *domains, size_t n_domains)
{
    const char *at = strrchr(address, '@');
    size_t i;

    if (at == NULL)
        return 0;
    for (i = 0; i < n_domains; i++)
        if (strcasecmp(at + 1, domains[i]) == 0)
            return 1;
    return 0;
}

static int header_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Read the envelope of directory/name into *m, keeping the file open at the
 * start of the content. 0 on success, -1 (and a log line) otherwise. */
static int read_message(const struct example *ex, const char *name, char *const *domains, size_t n_domains,
                        struct message *m)
{
    char path[4096], *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct stat st;
    int have_sender = 0, ended = 0;

    memset(m, 0, sizeof *m);
    snprintf(path, sizeof path, "%s/%s", ex->directory, name);
    m->file = fopen(path, "rb");
    if (m->file == NULL || fstat(fileno(m->file), &st) != 0 || !S_ISREG(st.st_mode)) {
        if (m->file == NULL && errno != ENOENT) /* gone: collected by another session */
            say(ex->host, ODMR_LOG_WARN, "example: skipping %s: %s", path, strerror(errno));
        free_message(m);
        return -1;
    }
    m->name = strdup(name);
    while ((n = getline(&line, &cap, m->file)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0) {
            ended = 1;
            break;
        }
        if (header_is(line, "Envelope-From") && !have_sender) {
            m->sender = address_of(line + strlen("Envelope-From:"));
            have_sender = 1;
        } else if (header_is(line, "Envelope-To")) {
            struct rcpt *more = realloc(m->rcpts, (m->n_rcpts + 1) * sizeof *more);
            if (more == NULL)
                break;
            m->rcpts = more;
            more[m->n_rcpts].address = address_of(line + strlen("Envelope-To:"));
            more[m->n_rcpts].selected =
                domain_requested(more[m->n_rcpts].address, domains, n_domains);
            more[m->n_rcpts].outcome = NO_OUTCOME;
            m->n_selected += (size_t)more[m->n_rcpts].selected;
            m->n_rcpts++;
        } else {
            break; /* not an envelope line: malformed */
        }
    }
    free(line);
    if (!ended || !have_sender || m->n_rcpts == 0 || m->sender == NULL) {
        say(ex->host, ODMR_LOG_WARN, "example: skipping malformed message %s (no envelope)", path);
        free_message(m);
        return -1;
    }
    m->content_offset = ftell(m->file);
    m->size = (uint64_t)(st.st_size - m->content_offset);
    return 0;
}

struct cursor {
    struct example *ex;
    char **domains;
    size_t n_domains;
    char **names;
    size_t n_names;
    size_t next;
    struct message current;
};

static void cursor_close(odmr_cursor *cur)
{
    struct cursor *c = (struct cursor *)cur;
    size_t i;

    if (c == NULL)
        return;
    free_message(&c->current);
    for (i = 0; i < c->n_domains; i++)
        free(c->domains[i]);
    for (i = 0; i < c->n_names; i++)
        free(c->names[i]);
    free(c->domains);
    free(c->names);
    free(c);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static odmr_status open_cursor(struct example *ex, const odmr_str *domains, size_t n_domains,
                               struct cursor **out)
{
    struct cursor *c;
    DIR *dir;
    struct dirent *e;
    size_t i;

    if (ex->directory == NULL) {
        say(ex->host, ODMR_LOG_ERROR, "example: no queue directory configured ('directory' in [queue])");
        return ODMR_TEMPFAIL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return ODMR_TEMPFAIL;
    c->ex = ex;
    c->domains = calloc(n_domains ? n_domains : 1, sizeof *c->domains);
    for (i = 0; c->domains && i < n_domains; i++)
        c->domains[c->n_domains++] = copy_str(domains[i]);
    dir = opendir(ex->directory);
    if (dir == NULL) {
        say(ex->host, ODMR_LOG_ERROR, "example: cannot read %s: %s", ex->directory, strerror(errno));
        cursor_close((odmr_cursor *)c);
        return ODMR_TEMPFAIL;
    }
    while ((e = readdir(dir)) != NULL) {
        char **more;
        if (e->d_name[0] == '.')
            continue;
        more = realloc(c->names, (c->n_names + 1) * sizeof *more);
        if (more == NULL)
            break;
        c->names = more;
        c->names[c->n_names++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(c->names, c->n_names, sizeof *c->names, by_name); /* oldest-named first, and deterministic */
    *out = c;
    return ODMR_OK;
}

/* Advance to the next message with a recipient in a requested domain. */
static int advance(struct cursor *c)
{
    free_message(&c->current);
    while (c->next < c->n_names) {
        struct message *m = &c->current;
        size_t i, k = 0;

        if (read_message(c->ex, c->names[c->next++], c->domains, c->n_domains, m) != 0)
            continue;
        if (m->n_selected == 0) {
            free_message(m);
            continue;
        }
        m->selected = calloc(m->n_selected, sizeof *m->selected);
        if (m->selected == NULL) {
            free_message(m);
            return 0;
        }
        for (i = 0; i < m->n_rcpts; i++)
            if (m->rcpts[i].selected)
                m->selected[k++] = i;
        fseek(m->file, m->content_offset, SEEK_SET);
        return 1;
    }
    return 0;
}

static odmr_status has_pending(odmr_instance *inst, const odmr_str *domains, size_t n_domains,
                               uint32_t *pending)
{
    struct cursor *c;
    odmr_status rc = open_cursor((struct example *)inst, domains, n_domains, &c);

    if (rc != ODMR_OK)
        return rc;
    *pending = (uint32_t)advance(c); /* the same rule as cursor_next */
    cursor_close((odmr_cursor *)c);
    return ODMR_OK;
}

static odmr_status cursor_open(odmr_instance *inst, const odmr_str *domains, size_t n_domains,
                               odmr_cursor **out)
{
    return open_cursor((struct example *)inst, domains, n_domains, (struct cursor **)out);
}

static odmr_status cursor_next(odmr_cursor *cur, const odmr_envelope_sink *sink)
{
    struct cursor *c = (struct cursor *)cur;
    struct message *m = &c->current;
    size_t i;

    if (!advance(c))
        return ODMR_END;
    {
        odmr_str id = { (const uint8_t *)m->name, strlen(m->name) };
        odmr_str sender = { (const uint8_t *)m->sender, strlen(m->sender) };
        sink->message(sink->ctx, id, sender, m->size);
    }
    for (i = 0; i < m->n_selected; i++) {
        const char *a = m->rcpts[m->selected[i]].address;
        odmr_str address = { (const uint8_t *)a, strlen(a) };
        sink->recipient(sink->ctx, address);
    }
    return ODMR_OK;
}

static odmr_status read_body(odmr_cursor *cur, uint8_t *buf, size_t cap, size_t *len_out)
{
    struct cursor *c = (struct cursor *)cur;
    size_t n;

    *len_out = 0;
    if (c->current.file == NULL)
        return ODMR_INVALID_ARGUMENT;
    n = fread(buf, 1, cap, c->current.file);
    if (n > 0) {
        *len_out = n;
        return ODMR_OK;
    }
    if (ferror(c->current.file)) {
        say(c->ex->host, ODMR_LOG_ERROR, "example: reading %s: %s", c->current.name, strerror(errno));
        return ODMR_TEMPFAIL;
    }
    return ODMR_END;
}

static odmr_status set_outcome(odmr_cursor *cur, size_t index, int32_t outcome)
{
    struct cursor *c = (struct cursor *)cur;

    if (c->current.name == NULL || index >= c->current.n_selected)
        return ODMR_INVALID_ARGUMENT;
    if (outcome != ODMR_OUTCOME_DELIVERED && outcome != ODMR_OUTCOME_TEMPFAIL &&
        outcome != ODMR_OUTCOME_PERMFAIL)
        return ODMR_INVALID_ARGUMENT;
    c->current.rcpts[c->current.selected[index]].outcome = outcome;
    return ODMR_OK;
}

static int leaves_queue(const struct rcpt *r)
{
    return r->selected && (r->outcome == ODMR_OUTCOME_DELIVERED || r->outcome == ODMR_OUTCOME_PERMFAIL);
}

/* Write the remaining recipients and the content to a temporary file, then
 * rename it over the message: a crash leaves either the old or the new file. */
static odmr_status rewrite(struct cursor *c, const char *path)
{
    struct message *m = &c->current;
    char tmp[4096], chunk[8192];
    FILE *out;
    size_t i, n;
    int ok;

    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", c->ex->directory, m->name);
    out = fopen(tmp, "wb");
    if (out == NULL)
        return ODMR_TEMPFAIL;
    ok = fprintf(out, "Envelope-From: <%s>\n", m->sender) > 0;
    for (i = 0; ok && i < m->n_rcpts; i++)
        if (!leaves_queue(&m->rcpts[i]))
            ok = fprintf(out, "Envelope-To: <%s>\n", m->rcpts[i].address) > 0;
    ok = ok && fputs("\n", out) >= 0 && fseek(m->file, m->content_offset, SEEK_SET) == 0;
    while (ok && (n = fread(chunk, 1, sizeof chunk, m->file)) > 0)
        ok = fwrite(chunk, 1, n, out) == n;
    ok = ok && !ferror(m->file) && fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = (fclose(out) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        say(c->ex->host, ODMR_LOG_ERROR, "example: rewriting %s: %s", path, strerror(errno));
        unlink(tmp);
        return ODMR_TEMPFAIL;
    }
    return ODMR_OK;
}

static odmr_status commit(odmr_cursor *cur)
{
    struct cursor *c = (struct cursor *)cur;
    struct message *m = &c->current;
    char path[4096];
    size_t i, leaving = 0;
    odmr_status rc = ODMR_OK;

    if (m->name == NULL)
        return ODMR_INVALID_ARGUMENT;
    for (i = 0; i < m->n_rcpts; i++)
        leaving += (size_t)leaves_queue(&m->rcpts[i]);
    snprintf(path, sizeof path, "%s/%s", c->ex->directory, m->name);
    if (leaving == m->n_rcpts) {
        if (unlink(path) != 0) {
            say(c->ex->host, ODMR_LOG_ERROR, "example: removing %s: %s", path, strerror(errno));
            return ODMR_TEMPFAIL;
        }
    } else if (leaving > 0) {
        rc = rewrite(c, path);
    }
    if (rc == ODMR_OK)
        say(c->ex->host, ODMR_LOG_INFO, "example: message %s: %zu recipient(s) removed, %zu stay queued",
            m->name, leaving, m->n_rcpts - leaving);
    return rc;
}

static const odmr_queue_ops queue_ops = {
    .struct_size = sizeof(odmr_queue_ops),
    .has_pending = has_pending,
    .cursor_open = cursor_open,
    .cursor_next = cursor_next,
    .read_body = read_body,
    .set_outcome = set_outcome,
    .commit = commit,
    .cursor_close = cursor_close,
};

/* ------------------------------------------------------------------------ */
/* The descriptor and the one exported symbol. */

static const odmr_plugin plugin = {
    .struct_size = sizeof(odmr_plugin),
    .abi_major = ODMR_ABI_MAJOR,
    .abi_minor = ODMR_ABI_MINOR,
    .name = "example-c",
    .version = "1.0",
    .flags = 0, /* not ODMR_F_THREADSAFE: odmrd serialises every call */
    .instance_new = example_new,
    .instance_free = example_free,
    .credentials = &credentials_ops,
    .queue = &queue_ops,
};

odmr_status odmr_plugin_init(const odmr_host *host, const odmr_plugin **out)
{
    if (host == NULL || out == NULL)
        return ODMR_INVALID_ARGUMENT;
    if (host->abi_major != ODMR_ABI_MAJOR)
        return ODMR_VERSION;
    *out = &plugin;
    return ODMR_OK;
}
