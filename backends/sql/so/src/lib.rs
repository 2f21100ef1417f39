//! The SQL credential backend as a shared object, `libodmr_backend_sql.so`:
//! the code of `builtin:sql`. odmrd does not link the SQL drivers (they
//! would make every start, and so every inetd session, pay for their
//! relocations and libsqlite3); it resolves `plugin = builtin:sql` to this
//! object, shipped next to it (`/usr/lib/odmrd/`), and loads it through the
//! public ABI like any `plugin = /path/to/libodmr_backend_sql.so`.
//!
//! Owns the exported symbols: `odmr_plugin_init` (with the panic hook the
//! kit installs for a shared object, and a quiet one until then) and odmrd's *private* entry to the
//! database locks of `[server] lock = database` (below). The backend itself
//! is `odmr-backend-sql`.
//!
//! # The private lock entry
//!
//! `lock = database` needs the drivers too, outside any credential call, so
//! this object exports five C functions for odmrd alone. They are **not**
//! part of the plugin ABI (`odmr_api.h`): no other plugin has them, and they
//! may change with any release. odmrd calls them only on the object of its
//! own build: it first compares [`odmr_sql_private_version`] with its own
//! version and refuses any other.
//!
//! - `odmr_sql_locks_open(pairs, n, err, err_cap, err_len) -> handle` from the
//!   `[credentials]` pairs (null on error, the reason in `err`);
//! - `odmr_sql_locks_acquire(handle, domains, n, &held, err, err_cap, err_len) -> status`:
//!   `ODMR_OK` (all held, `held` set), `ODMR_DENIED` (busy: `err` is the domain),
//!   `ODMR_TEMPFAIL` (database unavailable: `err` says why), `ODMR_PANIC`,
//!   `ODMR_INVALID_ARGUMENT`;
//! - `odmr_sql_locks_release(held)`, `odmr_sql_locks_free(handle)`.
//!
//! Inputs are borrowed for the call; error texts go to the caller's buffer,
//! cut to its capacity (at a character boundary); handles are freed only by
//! their own function. A handle may be used from several threads at once; a
//! held set is released on any thread. Panics are caught and never cross.

use odmr_api::ffi::{
    odmr_status, OdmrKv, OdmrStr, ODMR_DENIED, ODMR_INVALID_ARGUMENT, ODMR_OK, ODMR_PANIC, ODMR_TEMPFAIL,
};
use odmr_api::kit::{domain_list, guard, owned_pairs, write_error};
use odmr_backend_sql::lock::{DatabaseLocks, Held, LockFailure};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `odmr_plugin_init`, as `export_shared_object!` writes it, but first
/// consuming [`keep_panics_off_fd2`]: the kit's hook that routes panics to
/// odmrd's log is then never replaced by the quiet one, whichever of the
/// plugin and the lock entry odmrd calls first.
///
/// # Safety
/// As documented in `odmr_api.h`: `host` valid until exit or null, `out`
/// valid for one write or null.
#[no_mangle]
pub unsafe extern "C" fn odmr_plugin_init(
    host: *const odmr_api::ffi::odmr_host,
    out: *mut *const odmr_api::ffi::odmr_plugin,
) -> odmr_status {
    keep_panics_off_fd2();
    // SAFETY: forwarded from our own caller's contract.
    unsafe { odmr_api::kit::shared_object_init(host, out, odmr_backend_sql::sql_plugin_init) }
}

/// odmrd calls the lock entry while it reads its configuration, before any
/// `odmr_plugin_init` has routed this object's panics to its log; std's
/// default hook would print a panic on fd 2, under inetd the customer's
/// socket. So, once, before either: a hook that prints nothing (the call
/// still fails with its "caught" error; `odmr_plugin_init` replaces the hook).
fn keep_panics_off_fd2() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// This object's version: the workspace's, so odmrd's of the same build, and the revision of
/// the private entry's signatures (`+locks.N`; odmrd's `sql_locks.rs` names the same string:
/// raise N on both sides whenever one of the five functions changes, since the crate version
/// stays the same between commits). odmrd refuses the private entry of any other.
#[no_mangle]
pub extern "C" fn odmr_sql_private_version() -> OdmrStr {
    OdmrStr::from_bytes(concat!(env!("CARGO_PKG_VERSION"), "+locks.1").as_bytes())
}

/// Open the locks of a `[credentials]` section; null with the reason in `err` on error.
///
/// # Safety
/// `pairs` valid for `n` `OdmrKv` (each string valid for the call); `err`
/// valid for `err_cap` bytes; `err_len` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn odmr_sql_locks_open(
    pairs: *const OdmrKv,
    n: usize,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> *mut DatabaseLocks {
    keep_panics_off_fd2();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per this function's contract.
        let owned = unsafe { owned_pairs(pairs, n) }
            .map_err(|_| "the settings are not readable (a null pointer, or not UTF-8)".to_string())?;
        DatabaseLocks::from_credentials(&owned)
    }));
    match opened {
        Ok(Ok(locks)) => Box::into_raw(Box::new(locks)),
        Ok(Err(reason)) => {
            // SAFETY: per this function's contract.
            unsafe { write_error(&reason, err, err_cap, err_len) };
            std::ptr::null_mut()
        }
        Err(_) => {
            // SAFETY: per this function's contract.
            unsafe { write_error("panic in odmr_sql_locks_open (caught)", err, err_cap, err_len) };
            std::ptr::null_mut()
        }
    }
}

/// Lock every domain of `domains` without waiting, or none; see the module doc for the statuses.
///
/// # Safety
/// `locks` from `odmr_sql_locks_open`, not freed; `domains` valid for `n`
/// `OdmrStr` (each valid for the call); `held` valid for one write; `err`
/// valid for `err_cap` bytes; `err_len` for one write.
#[no_mangle]
pub unsafe extern "C" fn odmr_sql_locks_acquire(
    locks: *const DatabaseLocks,
    domains: *const OdmrStr,
    n: usize,
    held: *mut *mut Held,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> odmr_status {
    if locks.is_null() || held.is_null() {
        return ODMR_INVALID_ARGUMENT;
    }
    keep_panics_off_fd2();
    let mut reason = String::new();
    let status = guard(|| {
        // SAFETY: per this function's contract.
        let names = match unsafe { domain_list(domains, n) } {
            Ok(names) => names,
            Err(status) => return status.to_raw(),
        };
        // SAFETY: a live handle of `odmr_sql_locks_open`, shared read-only.
        let locks = unsafe { &*locks };
        match locks.acquire(&names) {
            Ok(set) => {
                // SAFETY: `held` checked non-null, valid for one write.
                unsafe { *held = Box::into_raw(Box::new(set)) };
                ODMR_OK
            }
            Err(LockFailure::Busy(domain)) => {
                reason = domain;
                ODMR_DENIED
            }
            Err(LockFailure::Unavailable(why)) => {
                reason = why;
                ODMR_TEMPFAIL
            }
        }
    });
    if status == ODMR_PANIC {
        reason = "panic in odmr_sql_locks_acquire (caught)".into();
    }
    // SAFETY: per this function's contract.
    unsafe { write_error(&reason, err, err_cap, err_len) };
    status
}

/// Release a held set (closing its connection releases every lock in it).
///
/// # Safety
/// `held` from `odmr_sql_locks_acquire`, released once, or null.
#[no_mangle]
pub unsafe extern "C" fn odmr_sql_locks_release(held: *mut Held) {
    if !held.is_null() {
        // SAFETY: made by Box::into_raw in `odmr_sql_locks_acquire`, released once.
        let held = unsafe { Box::from_raw(held) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(held)));
    }
}

/// Free a handle of `odmr_sql_locks_open` (sets it holds stay valid).
///
/// # Safety
/// `locks` from `odmr_sql_locks_open`, freed once, or null.
#[no_mangle]
pub unsafe extern "C" fn odmr_sql_locks_free(locks: *mut DatabaseLocks) {
    if !locks.is_null() {
        // SAFETY: made by Box::into_raw in `odmr_sql_locks_open`, freed once.
        let locks = unsafe { Box::from_raw(locks) };
        let _ = catch_unwind(AssertUnwindSafe(|| drop(locks)));
    }
}
