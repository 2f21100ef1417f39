//! The SQL credential backend as a shared object, `libodmr_backend_sql.so`:
//! the same code as `builtin:sql`, loadable with
//! `plugin = /path/to/libodmr_backend_sql.so` in `[credentials]`.
//!
//! Owns only the exported `odmr_plugin_init` symbol (and the panic hook the
//! kit installs for a shared object); the backend is `odmr-backend-sql`.

odmr_api::export_shared_object!(odmr_backend_sql::sql_plugin_init);
