pub use odmr_api::ffi::{odmr_host, odmr_plugin, odmr_status};
/// STUB
pub unsafe extern "C" fn maildir_plugin_init(
    _h: *const odmr_host,
    _o: *mut *const odmr_plugin,
) -> odmr_status {
    odmr_api::ffi::ODMR_INTERNAL
}
