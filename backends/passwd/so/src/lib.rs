//! The passwd credential backend as a shared object, `libodmr_backend_passwd.so`:
//! the same code as `builtin:passwd`, loadable with
//! `plugin = /path/to/libodmr_backend_passwd.so` in `[credentials]`.
//!
//! Owns only the exported `odmr_plugin_init` symbol (and the panic hook the
//! kit installs for a shared object); the backend is `odmr-backend-passwd`.

odmr_api::export_shared_object!(odmr_backend_passwd::passwd_plugin_init);
