//! The Exim spool queue backend as a shared object, `libodmr_backend_exim.so`:
//! the same code as `builtin:exim`, loadable with
//! `plugin = /path/to/libodmr_backend_exim.so` in `[queue]`.
//!
//! Owns only the exported `odmr_plugin_init` symbol (and the panic hook the
//! kit installs for a shared object); the backend is `odmr-backend-exim`.

odmr_api::export_shared_object!(odmr_backend_exim::exim_plugin_init);
