//! A credential backend for the tests in `t/plugins.rs`, built with the kit as
//! a shared object: `user = NAME:PASSWORD:DOMAIN,...` like the C example, and
//! it panics whenever asked about the user `panic`. The host must answer 451,
//! log the panic with the plugin's name, and keep serving other sessions.

use odmr_api::{Credentials, Host, Instance, LogLevel, Secret, Status};

struct User {
    name: String,
    password: String,
    domains: Vec<String>,
}

/// The plugin's instance: its users.
pub struct Panicky {
    users: Vec<User>,
}

impl Instance for Panicky {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        let mut users = Vec::new();
        for (key, value) in config {
            if key != "user" {
                return Err(format!("unknown key '{key}'"));
            }
            let mut fields = value.splitn(3, ':');
            let (Some(name), Some(password), Some(domains)) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("user: '{value}' is not NAME:PASSWORD:DOMAINS"));
            };
            let domains = domains.split(',').map(|d| d.trim().to_string()).collect();
            users.push(User { name: name.into(), password: password.into(), domains });
        }
        host.log(LogLevel::Info, &format!("{} users", users.len()));
        Ok(Panicky { users })
    }
}

impl Panicky {
    fn user(&self, name: &str) -> Result<&User, Status> {
        if name == "panic" {
            panic!("deliberate panic for user {name}");
        }
        self.users.iter().find(|u| u.name == name).ok_or(Status::NotFound)
    }
}

impl Credentials for Panicky {
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        Ok(Secret::Plain(self.user(user)?.password.clone().into_bytes()))
    }

    fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        Ok(self.user(user)?.domains.clone())
    }
}

odmr_api::export_plugin!(fn panicky_plugin_init, "panicky", Panicky: [credentials]);
odmr_api::export_shared_object!(panicky_plugin_init);
