//! A configured query: Dovecot's placeholders turned into bound parameters.
//!
//! `password_query` and `domains_query` are written as in Dovecot's
//! `dovecot-sql.conf.ext`, with `%u` (the whole login), `%n` (its local part)
//! and `%d` (its domain), also spelt `%{user}`, `%{username}` and
//! `%{domain}`, and `%%` for a literal `%`. Each placeholder becomes a
//! parameter of the driver's style (`$1`, `$2` … for PostgreSQL, `?` for
//! MariaDB and SQLite), and the login's parts are sent separately from the
//! SQL text, so no login, whatever characters it holds, can change a query.
//! Quotes around a placeholder (`'%u'`, as Dovecot's examples write them)
//! are dropped with it. An unknown `%x`, or a driver placeholder written by
//! hand (`?`, `$1`), is a configuration error naming the key.
//!
//! This module owns only that rewriting and splitting a login; it runs no query.

/// How a driver writes a positional parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `$1`, `$2`, … (PostgreSQL)
    Dollar,
    /// `?` (MariaDB/MySQL, SQLite)
    Question,
}

/// Which part of the login a parameter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `%u`: the whole login.
    User,
    /// `%n`: the part before the last `@` (the whole login if it has none).
    Local,
    /// `%d`: the part after the last `@` (empty if it has none).
    Domain,
}

/// A query ready for the driver: its SQL and the login part of each parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The configuration key it came from, for error messages.
    pub key: &'static str,
    /// The SQL with driver parameters in place of the placeholders.
    pub sql: String,
    /// One entry per parameter, in order.
    pub parts: Vec<Part>,
}

impl Query {
    /// Rewrite `template` (the value of `key`) for a driver of `style`.
    pub fn parse(key: &'static str, template: &str, style: Style) -> Result<Query, String> {
        let mut sql = String::with_capacity(template.len());
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            let quote = (c == '\'' || c == '"').then_some(c);
            // A quoted placeholder: 'X' where X is one placeholder.
            if let Some(q) = quote {
                if let Some((part, len)) = placeholder(&rest[1..]) {
                    if rest[1 + len..].starts_with(q) {
                        push_parameter(&mut sql, &mut parts, part, style);
                        rest = &rest[2 + len..];
                        continue;
                    }
                }
            }
            if c == '%' {
                if let Some(after) = rest.strip_prefix("%%") {
                    sql.push('%');
                    rest = after;
                    continue;
                }
                let Some((part, len)) = placeholder(rest) else {
                    let shown: String = rest.chars().take(3).collect();
                    return Err(format!(
                        "key '{key}': unknown placeholder '{shown}…' (known: %u, %n, %d, %{{user}}, \
                         %{{username}}, %{{domain}}; write %% for a literal %)"
                    ));
                };
                push_parameter(&mut sql, &mut parts, part, style);
                rest = &rest[len..];
                continue;
            }
            if c == '?' || (c == '$' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
                return Err(format!(
                    "key '{key}': write the login as %u, %n or %d, not as a driver parameter ('{c}'); \
                     odmrd binds them itself"
                ));
            }
            sql.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if sql.trim().is_empty() {
            return Err(format!("key '{key}' is empty"));
        }
        Ok(Query { key, sql, parts })
    }

    /// The parameter values for `login`, in order.
    pub fn bind(&self, login: &str) -> Vec<String> {
        let (local, domain) = split_login(login);
        self.parts
            .iter()
            .map(|part| match part {
                Part::User => login,
                Part::Local => local,
                Part::Domain => domain,
            })
            .map(str::to_owned)
            .collect()
    }
}

/// `%n` and `%d` of a login: split at the last `@`, as Dovecot does.
pub fn split_login(login: &str) -> (&str, &str) {
    login.rsplit_once('@').unwrap_or((login, ""))
}

/// The placeholder at the start of `text`, and its length.
fn placeholder(text: &str) -> Option<(Part, usize)> {
    const FORMS: &[(&str, Part)] = &[
        ("%u", Part::User),
        ("%n", Part::Local),
        ("%d", Part::Domain),
        ("%{user}", Part::User),
        ("%{username}", Part::Local),
        ("%{domain}", Part::Domain),
    ];
    FORMS.iter().find(|(form, _)| text.starts_with(form)).map(|(form, part)| (*part, form.len()))
}

fn push_parameter(sql: &mut String, parts: &mut Vec<Part>, part: Part, style: Style) {
    parts.push(part);
    match style {
        Style::Dollar => sql.push_str(&format!("${}", parts.len())),
        Style::Question => sql.push('?'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_parameters_in_each_style() {
        let template = "SELECT password FROM users WHERE userid = '%n' AND domain = \"%d\" OR login = %u";
        let q = Query::parse("password_query", template, Style::Dollar).unwrap();
        assert_eq!(q.sql, "SELECT password FROM users WHERE userid = $1 AND domain = $2 OR login = $3");
        assert_eq!(q.parts, [Part::Local, Part::Domain, Part::User]);
        let q = Query::parse("password_query", template, Style::Question).unwrap();
        assert_eq!(q.sql, "SELECT password FROM users WHERE userid = ? AND domain = ? OR login = ?");
        let q = Query::parse(
            "domains_query",
            "SELECT d FROM t WHERE u = %{user} AND x LIKE 'a%%'",
            Style::Question,
        )
        .unwrap();
        assert_eq!(q.sql, "SELECT d FROM t WHERE u = ? AND x LIKE 'a%'");
        assert_eq!(q.parts, [Part::User]);
    }

    #[test]
    fn metacharacters_in_a_login_stay_in_the_parameters() {
        let q =
            Query::parse("password_query", "SELECT password FROM u WHERE l = '%u'", Style::Question).unwrap();
        let login = "x' OR '1'='1'; DROP TABLE u; --@example.org";
        assert_eq!(q.bind(login), [login]);
        assert_eq!(q.sql, "SELECT password FROM u WHERE l = ?");
        let q = Query::parse("password_query", "SELECT 1 WHERE %n = %d", Style::Dollar).unwrap();
        assert_eq!(q.bind("a@b@example.org"), ["a@b", "example.org"]);
        assert_eq!(q.bind("plain"), ["plain", ""]);
    }

    #[test]
    fn bad_templates_are_refused_naming_the_key() {
        for (template, fragment) in [
            ("SELECT password FROM u WHERE l = %x", "unknown placeholder '%x"),
            ("SELECT password FROM u WHERE l = ?", "not as a driver parameter"),
            ("SELECT password FROM u WHERE l = $1", "not as a driver parameter"),
            ("  ", "is empty"),
        ] {
            let err = Query::parse("password_query", template, Style::Dollar).unwrap_err();
            assert!(err.starts_with("key 'password_query'") && err.contains(fragment), "{template}: {err}");
        }
    }
}
