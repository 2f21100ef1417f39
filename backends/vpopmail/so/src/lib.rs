//! The vpopmail credential backend as a shared object,
//! `libodmr_backend_vpopmail.so`: the same code as `builtin:vpopmail`,
//! loadable with `plugin = /path/to/libodmr_backend_vpopmail.so` in
//! `[credentials]`.
//!
//! Owns only the exported `odmr_plugin_init` symbol (and the panic hook the
//! kit installs for a shared object); the backend is `odmr-backend-vpopmail`.

odmr_api::export_shared_object!(odmr_backend_vpopmail::vpopmail_plugin_init);
