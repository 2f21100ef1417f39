/*
 * odmr_api.h: the stable C ABI between odmrd and its credential and queue
 * backends (plugins), ABI major 1.
 *
 * GENERATED from odmr-api/src/ffi.rs by cbindgen; do not edit. Regenerate with
 *     ODMR_BLESS=1 cargo test -p odmr-api --test header
 * The plugin author's guide is odmr-api/README.md.
 */

#ifndef ODMR_API_H
#define ODMR_API_H

#include <stddef.h>
#include <stdint.h>

/**
 * The ABI major version. A host accepts exactly its own major; a plugin
 * returns ODMR_VERSION from `odmr_plugin_init` for any other host major.
 */
#define ODMR_ABI_MAJOR 1

/**
 * The ABI minor version. Minors only append fields to the end of structs
 * (detected through `struct_size`) and add constants; appended function
 * pointers are nullable.
 */
#define ODMR_ABI_MINOR 1

/**
 * Plugin flag (`odmr_plugin.flags`): instance and cursor functions may be
 * called from several threads at once. Without it the host serialises every
 * call into the plugin, across all its instances and cursors.
 */
#define ODMR_F_THREADSAFE 1

/**
 * Log level for the host's `log` up-call: an error the operator must fix.
 */
#define ODMR_LOG_ERROR 0

/**
 * Log level: a condition the operator should look at.
 */
#define ODMR_LOG_WARN 1

/**
 * Log level: normal operation.
 */
#define ODMR_LOG_INFO 2

/**
 * Log level: detail for troubleshooting.
 */
#define ODMR_LOG_DEBUG 3

/**
 * Kind of secret returned by `lookup_secret`: the clear-text password.
 */
#define ODMR_SECRET_PLAIN 1

/**
 * Kind of secret returned by `lookup_secret`: Dovecot's 32-byte CRAM-MD5
 * HMAC context (opad MD5 state then ipad MD5 state, little-endian words).
 */
#define ODMR_SECRET_CRAM_MD5_CONTEXT 2

/**
 * ABI 1.1. Queue flag (`odmr_queue_ops.flags`): the host may call
 * `cursor_next` (and then `read_body`) for the next message before it has
 * committed the current one, to pipeline across messages. At most two
 * messages are then open: `read_body` reads the newer, while `set_outcome`,
 * `set_outcome_reply` and `commit` apply to the older until its `commit`,
 * which retires it whether it succeeds or not. Without the flag the host
 * commits each message before asking for the next.
 */
#define ODMR_QF_NEXT_BEFORE_COMMIT 1

/**
 * ABI 1.1. `ret` of `message_details`: the sender gave no RET (RFC 3461).
 */
#define ODMR_RET_UNSPECIFIED 0

/**
 * `ret`: RET=FULL, return the whole message in a DSN.
 */
#define ODMR_RET_FULL 1

/**
 * `ret`: RET=HDRS, return only the headers in a DSN.
 */
#define ODMR_RET_HDRS 2

/**
 * ABI 1.1. Bits of `notify` (RFC 3461 NOTIFY); 0 means the sender gave no
 * NOTIFY (the host then reports failures, as for FAILURE).
 * NOTIFY=NEVER: no DSN at all. Never combined with the other bits.
 */
#define ODMR_NOTIFY_NEVER 1

/**
 * NOTIFY=SUCCESS.
 */
#define ODMR_NOTIFY_SUCCESS 2

/**
 * NOTIFY=FAILURE.
 */
#define ODMR_NOTIFY_FAILURE 4

/**
 * NOTIFY=DELAY.
 */
#define ODMR_NOTIFY_DELAY 8

/**
 * ABI 1.1. Bits of a message's `flags`: the envelope needs SMTPUTF8 (it was
 * received with SMTPUTF8, or has UTF-8 addresses).
 */
#define ODMR_MSG_SMTPUTF8 1

/**
 * The body holds octets above 127 (or was received with BODY=8BITMIME).
 */
#define ODMR_MSG_8BIT 2

/**
 * The body is known to hold only 7-bit octets. With neither ODMR_MSG_8BIT
 * nor ODMR_MSG_7BIT the backend does not know.
 */
#define ODMR_MSG_7BIT 4

/**
 * Per-recipient outcome passed to `set_outcome`: the customer accepted it.
 * The backend removes the recipient on `commit`.
 */
#define ODMR_OUTCOME_DELIVERED 0

/**
 * Per-recipient outcome: temporary failure, the recipient stays queued.
 */
#define ODMR_OUTCOME_TEMPFAIL 1

/**
 * Per-recipient outcome: permanent failure. The host has already submitted a
 * delivery status notification; the backend removes the recipient on `commit`.
 */
#define ODMR_OUTCOME_PERMFAIL 2

/**
 * Opaque queue cursor, created by `cursor_open` and owned by the host until
 * it passes it to `cursor_close`. Used only on the thread that opened it.
 */
typedef struct odmr_cursor odmr_cursor;

/**
 * Opaque plugin instance, created by `instance_new` and owned by the host
 * until it passes it to `instance_free`. Its layout is the plugin's own.
 */
typedef struct odmr_instance odmr_instance;

/**
 * Result of every plugin call: one of the ODMR_* status values below. Values
 * not listed here are treated as ODMR_INTERNAL by the host. Only the host maps
 * statuses to SMTP replies.
 */
typedef int32_t odmr_status;

/**
 * What the host offers a plugin. Owned by the host and valid from
 * `odmr_plugin_init` until the process exits (plugins are never unloaded).
 * Read-only for the plugin. A v1.0 plugin reads only the v1.0 fields below;
 * a later plugin checks `struct_size` before reading a field appended later.
 */
typedef struct odmr_host {
    /**
     * `sizeof(odmr_host)` as the host was built.
     */
    uint32_t struct_size;
    /**
     * The host's ABI major.
     */
    uint32_t abi_major;
    /**
     * The host's ABI minor. Host-provided structs without a `struct_size`
     * (`odmr_envelope_sink`) have the layout of this minor.
     */
    uint32_t abi_minor;
    /**
     * Opaque host context, passed back to `log`.
     */
    void *ctx;
    /**
     * Log one line at `level` (ODMR_LOG_*), tagged by the host with the
     * plugin's name. `msg` is borrowed for the call and need not be
     * NUL-terminated. Callable from any thread, at any time, also from
     * inside `instance_new`. Plugins log only through this: under inetd,
     * file descriptors 0-2 are the customer's socket.
     */
    void (*log)(void *ctx, int32_t level, const uint8_t *msg, size_t len);
} odmr_host;

/**
 * A borrowed byte string (`odmr_str` in C). Not NUL-terminated; `ptr` may be
 * NULL when `len` is 0. Owned by whoever passes it and valid only for the
 * duration of the call (or callback) that passes it: copy what you keep.
 */
typedef struct odmr_str {
    /**
     * First byte, or NULL for the empty string.
     */
    const uint8_t *ptr;
    /**
     * Number of bytes.
     */
    size_t len;
} odmr_str;

/**
 * One `key = value` line of a plugin's ini section (`odmr_kv` in C), in file
 * order, borrowed for the `instance_new` call. `plugin` itself is not passed.
 */
typedef struct odmr_kv {
    /**
     * The key, as written in the ini file (lower-case by convention).
     */
    struct odmr_str key;
    /**
     * The value, with surrounding white space and comments removed.
     */
    struct odmr_str value;
} odmr_kv;

/**
 * Receives one domain from `list_domains`, on the calling thread, during the
 * `list_domains` call. `domain` is borrowed for the callback.
 */
typedef void (*odmr_domain_cb)(void *cb_ctx, struct odmr_str domain);

/**
 * ABI 1.1. Receives one account from `list_accounts`, on the calling
 * thread during the call: its user name, the domains it may collect
 * (comma-separated), its quota of held bytes (0: none; reported by `odmrd
 * --queue`, never enforced) and a contact address for notices (empty:
 * none). Every string is borrowed for the callback.
 */
typedef void (*odmr_account_cb)(void *cb_ctx,
                                struct odmr_str user,
                                struct odmr_str domains,
                                uint64_t quota,
                                struct odmr_str contact);

/**
 * Credential operations: a static table owned by the plugin, valid until the
 * process exits. Called from any session thread (all at once only with
 * ODMR_F_THREADSAFE). Inputs are borrowed for the call.
 */
typedef struct odmr_credentials_ops {
    /**
     * `sizeof(odmr_credentials_ops)` as the plugin was built; at least the
     * v1.0 size.
     */
    uint32_t struct_size;
    /**
     * Look up `user`'s secret. On ODMR_OK writes the secret into `buf[..cap]`,
     * its length into `*len_out` and its kind (ODMR_SECRET_*) into `*kind_out`.
     * ODMR_BUFFER_TOO_SMALL sets `*len_out` to the size needed (the host
     * calls again with a larger buffer). ODMR_NOT_FOUND: no such user.
     * ODMR_DENIED: the account is disabled. ODMR_UNSUPPORTED: the account
     * exists but has no secret usable for CRAM-MD5 (the plugin logs why; the
     * host then tries `verify_cram_md5`). Nullable if `verify_cram_md5` is set.
     */
    odmr_status (*lookup_secret)(struct odmr_instance *inst,
                                 struct odmr_str user,
                                 uint32_t *kind_out,
                                 uint8_t *buf,
                                 size_t cap,
                                 size_t *len_out);
    /**
     * Nullable. For stores that never reveal secrets: verify a CRAM-MD5
     * `digest` (32 lower-case hex bytes) for `challenge`. ODMR_OK when it
     * matches, ODMR_DENIED when it does not. Used only when `lookup_secret`
     * is NULL or returns ODMR_UNSUPPORTED.
     */
    odmr_status (*verify_cram_md5)(struct odmr_instance *inst,
                                   struct odmr_str user,
                                   struct odmr_str challenge,
                                   struct odmr_str digest);
    /**
     * Call `cb(cb_ctx, domain)` once per domain `user` may collect with ATRN,
     * synchronously, before returning ODMR_OK. The host compares domains
     * case-insensitively.
     */
    odmr_status (*list_domains)(struct odmr_instance *inst,
                                struct odmr_str user,
                                void *cb_ctx,
                                odmr_domain_cb cb);
    /**
     * ABI 1.1, nullable. Verify a clear-text `password` (AUTH PLAIN or LOGIN,
     * offered only under TLS) for stores that keep only hashes: ODMR_OK when
     * it matches, ODMR_DENIED when it does not or the account is disabled,
     * ODMR_NOT_FOUND for no such user, ODMR_UNSUPPORTED when the account's
     * scheme cannot be checked here. The host compares clear secrets from
     * `lookup_secret` itself and calls this only otherwise.
     */
    odmr_status (*verify_password)(struct odmr_instance *inst,
                                   struct odmr_str user,
                                   struct odmr_str password);
    /**
     * ABI 1.1, nullable. The client networks `user` may log in from (as
     * Dovecot's `allow_nets`): `cb(cb_ctx, net)` once per network, an address
     * or `address/prefix`, synchronously, before returning ODMR_OK; no call at
     * all means no restriction. ODMR_DENIED: restricted, but to nothing this
     * plugin could read (every login is refused). The host refuses a login
     * from elsewhere like a wrong password, and logs why.
     */
    odmr_status (*allowed_networks)(struct odmr_instance *inst,
                                    struct odmr_str user,
                                    void *cb_ctx,
                                    odmr_domain_cb cb);
    /**
     * ABI 1.1, nullable. For `odmrd --queue --by-account`: call `cb` once
     * per account that may collect at least one domain, synchronously,
     * then return ODMR_OK; ODMR_UNSUPPORTED for stores that cannot
     * enumerate their accounts. Called from any thread, like `list_domains`.
     */
    odmr_status (*list_accounts)(struct odmr_instance *inst, void *cb_ctx, odmr_account_cb cb);
} odmr_credentials_ops;

/**
 * Where `cursor_next` describes one message: owned by the host, borrowed for
 * the `cursor_next` call; the plugin calls its callbacks on the calling
 * thread before returning. Every string is borrowed for its callback.
 */
typedef struct odmr_envelope_sink {
    /**
     * Opaque host context for the callbacks.
     */
    void *ctx;
    /**
     * Called once first: queue id (for logs), envelope sender (empty for the
     * null sender `<>`), and the body size in bytes (0 when unknown).
     */
    void (*message)(void *ctx, struct odmr_str id, struct odmr_str sender, uint64_t size);
    /**
     * Called once per pending recipient of a requested domain, in order;
     * the n-th call (from 0) is recipient index n for `set_outcome`.
     */
    void (*recipient)(void *ctx, struct odmr_str address);
    /**
     * ABI 1.1, nullable; present only when `host->abi_minor >= 1` (a 1.0
     * host's sink ends before it). Called at most once, after `message` and
     * before the first `recipient`: `arrival` in seconds since the Unix
     * epoch (0 when unknown); `envid` the RFC 3461 ENVID with its xtext
     * decoded (empty when none); `ret` an ODMR_RET_* value; `flags` ODMR_MSG_*
     * bits; `wire_size` an upper bound of the octets the content takes on
     * the wire, CRLF line ends and dot-stuffing counted (0 when unknown), for
     * SIZE=. A message without this call has all of them unknown.
     */
    void (*message_details)(void *ctx,
                            int64_t arrival,
                            struct odmr_str envid,
                            uint32_t ret,
                            uint32_t flags,
                            uint64_t wire_size);
    /**
     * ABI 1.1, nullable, as `message_details`. Called at most once right
     * after a `recipient` call, for that recipient: `notify` ODMR_NOTIFY_*
     * bits (0: none given); `orcpt` the ORCPT as `addr-type;address` with the
     * xtext decoded, e.g. `rfc822;bob@example.org` (empty when none).
     */
    void (*recipient_details)(void *ctx, uint32_t notify, struct odmr_str orcpt);
} odmr_envelope_sink;

/**
 * ABI 1.1. Where `odmr_queue_ops.list` reports, for a queue listing: owned
 * by the host, borrowed for the `list` call; the plugin calls back on the
 * calling thread before returning. Every string is borrowed for its callback.
 * Fields appended by later minors are present when `struct_size` covers them.
 */
typedef struct odmr_list_sink {
    /**
     * `sizeof(odmr_list_sink)` as the host was built.
     */
    uint32_t struct_size;
    /**
     * Opaque host context for the callbacks.
     */
    void *ctx;
    /**
     * One message with pending recipients in `domain` (one of the requested
     * domains; a message with pending recipients in several is reported once
     * per domain): queue id, sender (empty for `<>`), size in bytes (0 when
     * unknown), arrival in seconds since the Unix epoch (0 when unknown),
     * ODMR_MSG_* flags.
     */
    void (*message)(void *ctx,
                    struct odmr_str domain,
                    struct odmr_str id,
                    struct odmr_str sender,
                    uint64_t size,
                    int64_t arrival,
                    uint32_t flags);
    /**
     * One pending recipient of the message last reported, in order, with
     * the last reply that deferred it if the queue knows it (else empty).
     */
    void (*recipient)(void *ctx, struct odmr_str address, struct odmr_str last_reply);
    /**
     * A file or entry that could not be read as a message: the domain it
     * was found under (empty when unknown), its id or file name, and why.
     */
    void (*unreadable)(void *ctx, struct odmr_str domain, struct odmr_str id, struct odmr_str reason);
} odmr_list_sink;

/**
 * Queue operations: a static table owned by the plugin, valid until the
 * process exits. `has_pending` and `cursor_open` are called from any session
 * thread; the cursor functions only on the thread that opened the cursor.
 * Without ODMR_F_THREADSAFE no two calls overlap.
 */
typedef struct odmr_queue_ops {
    /**
     * `sizeof(odmr_queue_ops)` as the plugin was built; at least the v1.0 size.
     */
    uint32_t struct_size;
    /**
     * Is any message pending for one of `domains` (lower-case, validated,
     * borrowed for the call)? Sets `*pending` to 1 or 0 on ODMR_OK. Must use
     * the same rule as the cursor, so that a yes is never followed by an
     * empty session.
     */
    odmr_status (*has_pending)(struct odmr_instance *inst,
                               const struct odmr_str *domains,
                               size_t n_domains,
                               uint32_t *pending);
    /**
     * Open a cursor over the messages with pending recipients in `domains`
     * (borrowed for the call: copy them) and store it in `*out`. The cursor
     * holds whatever locks the queue needs until `cursor_close`.
     */
    odmr_status (*cursor_open)(struct odmr_instance *inst,
                               const struct odmr_str *domains,
                               size_t n_domains,
                               struct odmr_cursor **out);
    /**
     * Advance to the next message and describe it through `sink` (borrowed
     * for the call). ODMR_OK: a message; ODMR_END: none left. Unreadable
     * messages are logged and skipped by the plugin, never reported here.
     */
    odmr_status (*cursor_next)(struct odmr_cursor *cur, const struct odmr_envelope_sink *sink);
    /**
     * Read the next bytes of the current message's content (headers and body,
     * not dot-stuffed, any line ending) into `buf[..cap]`. ODMR_OK with
     * `*len_out > 0`, or ODMR_END (and `*len_out = 0`) at the end of the message.
     */
    odmr_status (*read_body)(struct odmr_cursor *cur, uint8_t *buf, size_t cap, size_t *len_out);
    /**
     * Record recipient `index`'s outcome (ODMR_OUTCOME_*) for the current
     * message. Nothing changes on disk until `commit`.
     */
    odmr_status (*set_outcome)(struct odmr_cursor *cur, size_t index, int32_t outcome);
    /**
     * Apply the recorded outcomes of the current message durably: delivered and
     * permanently failed recipients leave the queue, the rest stay (also those
     * without a recorded outcome). A message never committed is left exactly
     * as it was.
     */
    odmr_status (*commit)(struct odmr_cursor *cur);
    /**
     * Release the cursor and its locks; the handle is invalid afterwards.
     * Uncommitted outcomes are discarded.
     */
    void (*cursor_close)(struct odmr_cursor *cur);
    /**
     * ABI 1.1: ODMR_QF_* bits (0 in a 1.0 table).
     */
    uint32_t flags;
    /**
     * ABI 1.1, nullable. A read-only listing for `odmrd --queue`: report
     * every message with pending recipients in `domains` (borrowed for the
     * call; none means every domain the queue can enumerate, ODMR_UNSUPPORTED
     * if it cannot) and every unreadable entry through `sink`, then return
     * ODMR_OK. Changes nothing, takes no lock a collection would wait for,
     * and may run while a session collects the same domains. Called from
     * any thread, like `has_pending`.
     */
    odmr_status (*list)(struct odmr_instance *inst,
                        const struct odmr_str *domains,
                        size_t n_domains,
                        const struct odmr_list_sink *sink);
    /**
     * ABI 1.1, nullable. As `set_outcome`, with the customer's reply (one
     * line, borrowed for the call), for queues that keep the last deferral
     * reason for the listing. When present the host calls it instead of
     * `set_outcome`.
     */
    odmr_status (*set_outcome_reply)(struct odmr_cursor *cur,
                                     size_t index,
                                     int32_t outcome,
                                     struct odmr_str reply);
} odmr_queue_ops;

/**
 * ABI 1.1. Receives one finding of `odmr_plugin.check`, on the calling
 * thread during the call: `level` is ODMR_LOG_ERROR (the configuration cannot
 * work: `odmrd --check-config` fails) or ODMR_LOG_WARN (it works, but the
 * operator should look); `message` is borrowed for the callback and names the
 * key, file or object concerned.
 */
typedef void (*odmr_check_cb)(void *cb_ctx, int32_t level, struct odmr_str message);

/**
 * A plugin's descriptor, returned by `odmr_plugin_init`. Owned by the plugin,
 * immutable, and valid until the process exits (usually a static).
 */
typedef struct odmr_plugin {
    /**
     * `sizeof(odmr_plugin)` as the plugin was built. The host refuses a
     * descriptor smaller than v1.0's and reads no field beyond `struct_size`.
     */
    uint32_t struct_size;
    /**
     * The plugin's ABI major: must equal the host's.
     */
    uint32_t abi_major;
    /**
     * The plugin's ABI minor: fields beyond what the host knows are ignored.
     */
    uint32_t abi_minor;
    /**
     * NUL-terminated plugin name, for logs. Static.
     */
    const char *name;
    /**
     * NUL-terminated plugin version, for logs. Static.
     */
    const char *version;
    /**
     * ODMR_F_* bits.
     */
    uint32_t flags;
    /**
     * Create an instance from the kv pairs of the plugin's ini section
     * (borrowed for the call: copy what you keep) and store it in `*out`.
     * Reject unknown keys. On failure, write a reason (not NUL-terminated,
     * naming the key) into `err[..err_cap]`, its full length into `*err_len`,
     * and return a non-OK status: odmrd prints the reason and exits with 78.
     * Called on the host's main thread, once per section using the plugin.
     */
    odmr_status (*instance_new)(const struct odmr_host *host,
                                const struct odmr_kv *kvs,
                                size_t n_kvs,
                                struct odmr_instance **out,
                                uint8_t *err,
                                size_t err_cap,
                                size_t *err_len);
    /**
     * Free an instance. Called on the host's main thread, if at all (odmrd
     * may simply exit). Nullable.
     */
    void (*instance_free)(struct odmr_instance *inst);
    /**
     * Nullable: present when the plugin serves `[credentials]`.
     */
    const struct odmr_credentials_ops *credentials;
    /**
     * Nullable: present when the plugin serves `[queue]`.
     */
    const struct odmr_queue_ops *queue;
    /**
     * ABI 1.1, nullable. Check an instance deeper than `instance_new` did,
     * for `odmrd --check-config`: files readable, directories present, the
     * database reachable, a sample lookup working. Report each finding
     * through `cb(cb_ctx, level, message)` and return ODMR_OK once the checks
     * ran (whatever they found), or a status when they could not run.
     * Called on the host's main thread.
     */
    odmr_status (*check)(struct odmr_instance *inst, void *cb_ctx, odmr_check_cb cb);
} odmr_plugin;

/**
 * The type of the one symbol a plugin exports, `odmr_plugin_init`. Called on
 * the host's main thread, once per section that names the plugin, before any
 * other plugin function. Checks `host->abi_major` (returns ODMR_VERSION for a
 * major it does not speak), stores a pointer to its static descriptor into
 * `*out` and returns ODMR_OK. `host` stays valid until the process exits.
 */
typedef odmr_status (*odmr_plugin_init_fn)(const struct odmr_host *host,
                                           const struct odmr_plugin **out);

/**
 * Success.
 */
#define ODMR_OK 0

/**
 * An iteration has no further element (cursor exhausted, body fully read).
 */
#define ODMR_END 1

/**
 * The user, domain or object does not exist. For credentials: the
 * customer gets 535 (authentication failed).
 */
#define ODMR_NOT_FOUND 2

/**
 * The object exists but is refused (a disabled account, a forbidden domain).
 * For credentials: the customer gets 535.
 */
#define ODMR_DENIED 3

/**
 * A temporary failure: retrying later may succeed. The customer gets 451
 * and may try again.
 */
#define ODMR_TEMPFAIL 4

/**
 * A permanent failure: retrying will not help. Logged by the host; the
 * customer still gets 451 (the store, not the customer, is at fault).
 */
#define ODMR_PERMFAIL 5

/**
 * The caller's buffer is too small; the size needed is in `*len_out`. The
 * host grows its buffer and calls again.
 */
#define ODMR_BUFFER_TOO_SMALL 6

/**
 * An argument is malformed (not UTF-8, out of range, NULL where not allowed).
 */
#define ODMR_INVALID_ARGUMENT 7

/**
 * The operation is not supported by this plugin or this object (for
 * `lookup_secret`: the account has no secret usable for CRAM-MD5).
 */
#define ODMR_UNSUPPORTED 8

/**
 * Version mismatch between host and plugin: `odmr_plugin_init` returns it
 * for a host major it does not speak.
 */
#define ODMR_VERSION 9

/**
 * The plugin panicked; the Rust kit reports this instead of unwinding. The
 * host logs it with the plugin's name and answers 451.
 */
#define ODMR_PANIC 10

/**
 * Any other internal error of the plugin. The host logs it and answers 451.
 */
#define ODMR_INTERNAL 11

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The one symbol a plugin exports (see `odmr_plugin_init_fn`). Called by
 * the host on its main thread, once per section naming the plugin, before
 * any other plugin function. Checks `host->abi_major` (ODMR_VERSION when
 * it is not ODMR_ABI_MAJOR), stores a pointer to the plugin's static
 * descriptor in `*out` and returns ODMR_OK. The plugin may keep `host`:
 * it stays valid until the process exits.
 *
 * Declared here only so that the header carries its prototype; the host
 * finds it with dlsym and never links against it.
 */
extern odmr_status odmr_plugin_init(const struct odmr_host *host, const struct odmr_plugin **out);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ODMR_API_H */
