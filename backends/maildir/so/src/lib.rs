//! The maildir queue backend as a shared object, `libodmr_backend_maildir.so`:
//! the same code as `builtin:maildir`, loadable with
//! `plugin = /path/to/libodmr_backend_maildir.so` in `[queue]`.
//!
//! Owns only the exported `odmr_plugin_init` symbol (and the panic hook the
//! kit installs for a shared object); the backend is `odmr-backend-maildir`.

odmr_api::export_shared_object!(odmr_backend_maildir::maildir_plugin_init);
