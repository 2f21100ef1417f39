//! The database locks of `[server] lock = database`, reached through the
//! private entry of `libodmr_backend_sql.so`.
//!
//! odmrd links no SQL driver; the locks need one, so they live in the shared
//! object of `builtin:sql` (found like it, by `backend::bundled_object`, and
//! loaded by the same `backend::open_library`). The five functions used here
//! are private between odmrd and that object of the same build (documented
//! in `backends/sql/so/src/lib.rs`; not part of the plugin ABI), so the
//! object's version must be odmrd's own. This module owns those calls and
//! the ownership of their handles behind a safe interface, [`DatabaseLocks`]
//! and [`Held`]; taking and holding the locks is the object's, and what a
//! busy domain means is the session's.

use crate::backend::{bundled_object, open_library, SQL_OBJECT};
use odmr_api::ffi::{odmr_status, OdmrKv, OdmrStr, ODMR_DENIED, ODMR_OK, ODMR_TEMPFAIL};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::OnceLock;

/// The object's answer to `odmr_sql_private_version` that odmrd accepts: its own crate version
/// and the revision of the signatures below (`+locks.N`, raised on both sides whenever one
/// changes: the crate version stays the same between commits, and a cargo build without its
/// own object falls back to the installed one).
const PRIVATE_ENTRY_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+locks.1");

// The signatures of the private entry, as `backends/sql/so/src/lib.rs` defines
// them (its handles are opaque here).
type VersionFn = extern "C" fn() -> OdmrStr;
type OpenFn = unsafe extern "C" fn(*const OdmrKv, usize, *mut u8, usize, *mut usize) -> *mut c_void;
type AcquireFn = unsafe extern "C" fn(
    *const c_void,
    *const OdmrStr,
    usize,
    *mut *mut c_void,
    *mut u8,
    usize,
    *mut usize,
) -> odmr_status;
type FreeFn = unsafe extern "C" fn(*mut c_void);

/// The entry's functions, from the object of odmrd's own version.
struct Entry {
    open: OpenFn,
    acquire: AcquireFn,
    release: FreeFn,
    free: FreeFn,
}

/// The entry, loaded once per process (the object's path does not change).
fn entry() -> Result<&'static Entry, String> {
    static ENTRY: OnceLock<Result<Entry, String>> = OnceLock::new();
    ENTRY.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Entry, String> {
    let path = bundled_object(SQL_OBJECT)?;
    let named = |e: String| format!("{}: {e}", path.display());
    let library = open_library(&path).map_err(named)?;
    let symbol = |name: &str| {
        let with_nul = format!("{name}\0");
        // SAFETY: only a pointer-sized address is read here; each caller below
        // gives it the type the object defines for that name.
        unsafe { library.get::<*const c_void>(with_nul.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| named(format!("does not export {name}: {e}")))
    };
    let version = symbol("odmr_sql_private_version")?;
    // SAFETY: the object defines this symbol as a `VersionFn`; same-size function pointer.
    let version = unsafe { std::mem::transmute::<*const c_void, VersionFn>(version) }();
    // SAFETY: a static string of the object, which is never unloaded.
    let version = String::from_utf8_lossy(unsafe { version.as_bytes() }).into_owned();
    let ours = PRIVATE_ENTRY_VERSION;
    if version != ours {
        return Err(named(format!(
            "is version {version} but odmrd is {ours}: the database locks need the object shipped \
             with this odmrd"
        )));
    }
    // SAFETY (each transmute): the object of this version defines each symbol with exactly
    // the type given (see its lib.rs); function pointers are pointer-sized.
    unsafe {
        Ok(Entry {
            open: std::mem::transmute::<*const c_void, OpenFn>(symbol("odmr_sql_locks_open")?),
            acquire: std::mem::transmute::<*const c_void, AcquireFn>(symbol("odmr_sql_locks_acquire")?),
            release: std::mem::transmute::<*const c_void, FreeFn>(symbol("odmr_sql_locks_release")?),
            free: std::mem::transmute::<*const c_void, FreeFn>(symbol("odmr_sql_locks_free")?),
        })
    }
}

/// Room for the object's error texts (longer ones are cut).
const ERROR_CAPACITY: usize = 1024;

/// An error text the object wrote into `buf`.
fn text(buf: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned()
}

/// Where the locks live: a handle of the object, from the `[credentials]` pairs.
pub struct DatabaseLocks {
    entry: &'static Entry,
    handle: NonNull<c_void>,
}

// SAFETY: the private entry allows a handle to be used from several threads at
// once (it is immutable in the object) and freed on any thread.
unsafe impl Send for DatabaseLocks {}
// SAFETY: as above; `acquire` only reads the handle.
unsafe impl Sync for DatabaseLocks {}

/// Why the locks could not be taken.
#[derive(Debug)]
pub enum LockFailure {
    /// Another session (perhaps on another host) collects this domain.
    Busy(String),
    /// The database could not be reached or refused the lock call.
    Unavailable(String),
}

/// Locks held for one session; dropping releases them all.
pub struct Held {
    entry: &'static Entry,
    held: NonNull<c_void>,
}

// SAFETY: the private entry allows a held set to be released on any thread.
unsafe impl Send for Held {}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl DatabaseLocks {
    /// From the `[credentials]` pairs of a `builtin:sql` backend. Errors name the key, or the
    /// object that could not be found or loaded.
    pub fn from_credentials(pairs: &[(String, String)]) -> Result<DatabaseLocks, String> {
        let entry = entry()?;
        let kvs: Vec<OdmrKv> = pairs
            .iter()
            .map(|(k, v)| OdmrKv {
                key: OdmrStr::from_bytes(k.as_bytes()),
                value: OdmrStr::from_bytes(v.as_bytes()),
            })
            .collect();
        let mut error = [0u8; ERROR_CAPACITY];
        let mut len = 0;
        // SAFETY: `kvs` and the strings it borrows outlive the call; `error` holds
        // ERROR_CAPACITY bytes; `len` is one writable usize.
        let handle =
            unsafe { (entry.open)(kvs.as_ptr(), kvs.len(), error.as_mut_ptr(), error.len(), &mut len) };
        match NonNull::new(handle) {
            Some(handle) => Ok(DatabaseLocks { entry, handle }),
            None => Err(text(&error, len)),
        }
    }

    /// Lock every domain of `domains` without waiting, or none of them.
    pub fn acquire(&self, domains: &[String]) -> Result<Held, LockFailure> {
        let names: Vec<OdmrStr> = domains.iter().map(|d| OdmrStr::from_bytes(d.as_bytes())).collect();
        let mut held = std::ptr::null_mut();
        let mut error = [0u8; ERROR_CAPACITY];
        let mut len = 0;
        // SAFETY: a live handle of `open`; `names` and the strings it borrows outlive
        // the call; `held` and `len` are writable; `error` holds ERROR_CAPACITY bytes.
        let status = unsafe {
            (self.entry.acquire)(
                self.handle.as_ptr(),
                names.as_ptr(),
                names.len(),
                &mut held,
                error.as_mut_ptr(),
                error.len(),
                &mut len,
            )
        };
        match (status, NonNull::new(held)) {
            (ODMR_OK, Some(held)) => Ok(Held { entry: self.entry, held }),
            (ODMR_DENIED, _) => Err(LockFailure::Busy(text(&error, len))),
            (ODMR_TEMPFAIL, _) => Err(LockFailure::Unavailable(text(&error, len))),
            (status, _) => Err(LockFailure::Unavailable(format!(
                "{SQL_OBJECT} failed the lock call (status {status}) {}",
                text(&error, len)
            ))),
        }
    }
}

impl Drop for DatabaseLocks {
    fn drop(&mut self) {
        // SAFETY: our handle of `open`, freed once, here.
        unsafe { (self.entry.free)(self.handle.as_ptr()) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: our set of `acquire`, released once, here.
        unsafe { (self.entry.release)(self.held.as_ptr()) }
    }
}
