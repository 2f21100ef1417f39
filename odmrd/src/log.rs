//! STUB (replaced by the proto-config branch).
#![allow(unused)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}
pub struct LogTarget {
    pub syslog: Option<syslog::Facility>,
    pub stderr: bool,
    pub level: Level,
}
pub fn init(target: &LogTarget) -> Result<(), String> {
    todo!()
}
pub fn log(level: Level, message: &str) {
    todo!()
}
pub fn error(message: &str) {}
pub fn warn(message: &str) {}
pub fn info(message: &str) {}
pub fn debug(message: &str) {}
