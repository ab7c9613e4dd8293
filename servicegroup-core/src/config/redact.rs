//! Keeping secrets out of messages, logs and `Debug`: the one masking rule of servicegroup.
//!
//! - [`redact_url`] masks the password of one URL-like value
//!   (`scheme://user:PASSWORD@host`, `?password=PASSWORD`);
//! - [`redact_text`] masks the same shapes anywhere in a message;
//! - [`mask_secret`] shows the value of a key a driver declared secret: a URL with its
//!   password masked, anything else as [`MASK`];
//! - `Secrets` (crate-private) remembers the secrets the configuration sources hold
//!   (the passwords of every URL, the values of declared secret keys) and masks them
//!   verbatim in error messages, for values too odd for the structural rule (a `/` or
//!   `@` in an unencoded password).

use figment::value::{Dict, Value};

/// What a masked secret is replaced by.
pub const MASK: &str = "***";

/// The value of a key declared secret, as it may be shown: a URL (`scheme://…`)
/// with its password masked, anything else replaced by [`MASK`] whole.
pub fn mask_secret(value: &str) -> String {
    if value.contains("://") {
        redact_url(value)
    } else if value.is_empty() {
        String::new()
    } else {
        MASK.to_owned()
    }
}

/// Replaces the password of one URL-like value by [`MASK`]: in the userinfo part
/// (up to the last `@` before the path, so an unencoded `@` in the password is
/// masked too) and in `password=` query parameters. Other text is returned as is.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some((colon, at)) = userinfo_password(&rest[..auth_len]) {
            out.replace_range(auth_start + colon + 1..auth_start + at, MASK);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The byte range of the password in a URL authority (`user:PASSWORD@host`):
/// the first `:` before the last `@`.
fn userinfo_password(authority: &str) -> Option<(usize, usize)> {
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((colon, at))
}

/// Secrets seen in the configuration sources, masked in every error message.
#[derive(Debug, Default, Clone)]
pub(crate) struct Secrets {
    passwords: Vec<String>,
}

impl Secrets {
    /// Remembers the passwords of every URL-like string value in `dict`.
    pub(crate) fn collect(&mut self, dict: &Dict) {
        for value in dict.values() {
            self.collect_value(value);
        }
    }

    /// Remembers a whole value (text, or every text in a list or table) of a key
    /// declared secret.
    pub(crate) fn collect_whole(&mut self, value: &Value) {
        match value {
            Value::String(_, s) => {
                self.remember(s.clone());
                self.collect_value(value);
            }
            Value::Dict(_, d) => d.values().for_each(|v| self.collect_whole(v)),
            Value::Array(_, items) => items.iter().for_each(|v| self.collect_whole(v)),
            _ => {}
        }
    }

    fn collect_value(&mut self, value: &Value) {
        match value {
            Value::String(_, s) => {
                for password in passwords_in(s) {
                    self.remember(password);
                }
            }
            Value::Dict(_, d) => self.collect(d),
            Value::Array(_, items) => items.iter().for_each(|v| self.collect_value(v)),
            _ => {}
        }
    }

    fn remember(&mut self, secret: String) {
        // Masking one or two characters everywhere would garble the message
        // without hiding anything the structural rule does not already hide.
        if secret.chars().count() >= 3 && !self.passwords.contains(&secret) {
            self.passwords.push(secret);
        }
    }

    /// The message with every known secret and every URL password masked.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        // Longest first, so a password containing another is masked whole.
        let mut passwords: Vec<&String> = self.passwords.iter().collect();
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for password in passwords {
            out = out.replace(password.as_str(), MASK);
        }
        redact_text(&out)
    }
}

/// Candidate passwords in a URL-like string: the userinfo password by the usual
/// rule and by the most generous one (up to the last `@`), and `password=` values.
fn passwords_in(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        for userinfo_end in [rest[..authority_end].rfind('@'), rest.rfind('@')]
            .into_iter()
            .flatten()
        {
            if let Some(colon) = rest[..userinfo_end].find(':') {
                found.push(rest[colon + 1..userinfo_end].to_owned());
            }
        }
    }
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = s[start..].find(['&', '#']).map_or(s.len(), |e| start + e);
        found.push(s[start..end].to_owned());
        from = start;
    }
    found
}

/// Masks `scheme://user:PASSWORD@host` and `password=PASSWORD` anywhere in `text`
/// (a URL ends at whitespace or a quote here; use [`redact_url`] for one value).
pub fn redact_text(text: &str) -> String {
    let stops = |c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(stops).unwrap_or(tail.len());
        let authority = &tail[..end];
        match userinfo_password(authority) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);

    let lower = out.to_ascii_lowercase();
    let mut masked = String::with_capacity(out.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find("password=") {
        let start = from + i + "password=".len();
        let end = out[start..]
            .find(|c: char| matches!(c, '&' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .map_or(out.len(), |e| start + e);
        masked.push_str(&out[copied..start]);
        masked.push_str(MASK);
        copied = end;
        from = end;
    }
    masked.push_str(&out[copied..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_text_are_masked() {
        assert_eq!(
            redact_text("found string \"postgres://nova:s3cret@db:5432/nova\", expected u32"),
            "found string \"postgres://nova:***@db:5432/nova\", expected u32"
        );
        assert_eq!(
            redact_text("mysql://u@h/x?charset=utf8&password=hunter2 and more"),
            "mysql://u@h/x?charset=utf8&password=*** and more"
        );
        assert_eq!(redact_text("no url here"), "no url here");
        assert_eq!(
            redact_text("sqlite:///C:\\x\\y.db"),
            "sqlite:///C:\\x\\y.db"
        );
    }

    #[test]
    fn one_url() {
        assert_eq!(
            redact_url(
                "postgresql+psycopg2://nova:s3cr3t@db:5432/nova?sslmode=require&password=s3cr3t"
            ),
            "postgresql+psycopg2://nova:***@db:5432/nova?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
        assert_eq!(redact_url("postgres://user@h/db"), "postgres://user@h/db");
        assert_eq!(redact_url("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            redact_url("postgres://u:pa ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn declared_secrets() {
        assert_eq!(mask_secret("hunter2"), MASK);
        assert_eq!(mask_secret("https://u:tok@h/x"), "https://u:***@h/x");
        assert_eq!(mask_secret(""), "");
        let mut secrets = Secrets::default();
        secrets.collect_whole(&Value::from("tok-123456"));
        assert_eq!(secrets.scrub("bad token tok-123456!"), "bad token ***!");
    }

    #[test]
    fn known_passwords_are_masked_verbatim() {
        let mut dict = Dict::new();
        dict.insert(
            "url".into(),
            Value::from("postgres://nova:pa/ss@word@db/nova"),
        );
        let mut secrets = Secrets::default();
        secrets.collect(&dict);
        let shown = secrets.scrub("bad: pa/ss@word.");
        assert_eq!(shown, "bad: ***.");
    }
}
