//! STUB (replaced by the proto-config branch).
#![allow(unused)]
use std::path::{Path, PathBuf};
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub credentials: PluginConfig,
    pub queue: PluginConfig,
    pub bounce: BounceConfig,
    pub log: crate::log::LogTarget,
}
pub struct ServerConfig {
    pub hostname: String,
    pub listen: Option<std::net::SocketAddr>,
    pub user: Option<String>,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub allow: Vec<ipnet::IpNet>,
    pub lock_directory: PathBuf,
    pub idle_timeout: std::time::Duration,
}
pub struct AuthConfig {
    pub mechanisms: Vec<String>,
    pub max_failures: u32,
    pub failure_delay: std::time::Duration,
}
pub enum PluginSource {
    Builtin(String),
    Path(PathBuf),
}
pub struct Setting {
    pub key: String,
    pub value: String,
    pub line: usize,
}
pub struct PluginConfig {
    pub section: &'static str,
    pub source: PluginSource,
    pub settings: Vec<Setting>,
}
pub struct BounceConfig {
    pub sendmail: Vec<String>,
}
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub section: Option<String>,
    pub key: Option<String>,
    pub message: String,
}
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!()
    }
}
impl std::error::Error for ConfigError {}
impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        todo!()
    }
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        todo!()
    }
}
